"""mTLS on TCP listeners (own SVID, own trust domain's clients only) and the config file's located errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.rpc import code_pb2

from ztid.errors import ConfigError
from ztid.sidecar.config import SidecarConfig, load_config, parse_listen
from ztid.spiffeid import SpiffeId

TD = "ai-platform.example"
ENVOY = f"spiffe://{TD}/envoy/edge"
WRITE_REGISTRY = {"ztid.target": "registry", "ztid.action": "write"}


def tls_config(trust: Any, policy: Path, **kw: Any) -> SidecarConfig:
    return SidecarConfig(policy=str(policy), listen=("127.0.0.1:0",), bundles=(str(trust.bundle),),
                         svid_cert=str(trust.cert), svid_key=str(trust.key), tls=True, **kw)


def client_creds(trust: Any, ca: Any, spiffe_id: str) -> grpc.ChannelCredentials:
    minted = ca.mint(spiffe_id)
    return grpc.ssl_channel_credentials(root_certificates=trust.bundle.read_bytes(), private_key=minted.key_pem(),
                                        certificate_chain=minted.chain_pem())


def _options() -> list[tuple[str, str]]:
    # gRPC Python clients check a hostname; the test SVID carries DNS:localhost beside its SPIFFE ID.
    return [("grpc.ssl_target_name_override", "localhost")]


def test_mtls_listener_serves_clients_of_its_own_trust_domain(
    trust: Any, policy_file: Path, run_sidecar: Callable[..., Any], make_request: Callable[..., ea.CheckRequest]
) -> None:
    cfg = tls_config(trust, policy_file, allowed_clients=(SpiffeId.parse(ENVOY),))
    req = make_request(principal=f"spiffe://{TD}/training/x", context_extensions=WRITE_REGISTRY)
    with run_sidecar(cfg) as run:
        target = run.target()
        with grpc.secure_channel(target, client_creds(trust, trust.ca, ENVOY), _options()) as ch:
            check = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                   request_serializer=ea.CheckRequest.SerializeToString,
                                   response_deserializer=ea.CheckResponse.FromString)
            assert check(req, timeout=5).status.code == code_pb2.OK
        # same trust domain, not an allowed caller: answered, denied
        other = client_creds(trust, trust.ca, f"spiffe://{TD}/inference/web")
        with grpc.secure_channel(target, other, _options()) as ch:
            check = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                   request_serializer=ea.CheckRequest.SerializeToString,
                                   response_deserializer=ea.CheckResponse.FromString)
            resp = check(req, timeout=5)
            assert resp.status.code == code_pb2.PERMISSION_DENIED
            assert json.loads(resp.denied_response.body)["reason"] == "caller_not_allowed"
        # another trust domain's client never completes the handshake
        foreign = client_creds(trust, trust.partner, "spiffe://partner.example/envoy/edge")
        with grpc.secure_channel(target, foreign, _options()) as ch:
            check = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                   request_serializer=ea.CheckRequest.SerializeToString,
                                   response_deserializer=ea.CheckResponse.FromString)
            with pytest.raises(grpc.RpcError) as info:
                check(req, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # and a plaintext client neither
        with grpc.insecure_channel(target) as ch:
            check = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                   request_serializer=ea.CheckRequest.SerializeToString,
                                   response_deserializer=ea.CheckResponse.FromString)
            with pytest.raises(grpc.RpcError):
                check(req, timeout=5)


# ---------------------------------------------------------------- config file

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


def test_full_config_with_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """\
listen: [unix:/run/ztid/authz.sock, "[::1]:9191"]
policy: policy.yaml
trust:
  bundles: [bundles/ai.pem]
  svid: {cert: svid.pem, key: svid.key}
decision_log: {path: logs/d.log, checkpoint_every: 50, fsync: always}
metrics: {listen: 127.0.0.1:9102}
reflection: true
tls: {enabled: true, allowed_clients: [spiffe://ai-platform.example/envoy/edge]}
drain_seconds: 2
extauthz:
  trust_xfcc: true
  proxy_id: spiffe://ai-platform.example/envoy/edge
  routes: [{method: GET, prefix: /v1/models, target: registry}]
"""))
    assert cfg.policy == str(tmp_path / "policy.yaml") and cfg.bundles == (str(tmp_path / "bundles/ai.pem"),)
    assert cfg.decision_log == str(tmp_path / "logs/d.log") and cfg.checkpoint_every == 50 and cfg.fsync == "always"
    assert cfg.listen == ("unix:/run/ztid/authz.sock", "[::1]:9191") and cfg.tls and cfg.reflection
    assert cfg.extauthz.trust_xfcc and cfg.extauthz.match("GET", "/v1/models/x") is not None
    assert cfg.allowed_clients == (SpiffeId.parse("spiffe://ai-platform.example/envoy/edge"),)


@pytest.mark.parametrize("text, where, what", [
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\nlisten: [nowhere]\n", "", "listen address"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\ncolour: red\n", ":3: colour", "unknown key"),
    ("policy: p.yaml\ntrust:\n  bundles: [b.pem]\n  svid: {cert: c.pem}\n", "", "both cert and key"),
    ("policy: p.yaml\ntrust:\n  bundles: [b.pem]\n  workload_api: unix:///x\n", "", "not both"),
    ("policy: p.yaml\n", "", "trust:"),
    ("trust: {bundles: [b.pem]}\n", "policy", "required"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\ndecision_log:\n  path: d.log\n  fsync: sometimes\n", "", "fsync"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\nreflection: yes please\n", ":3: reflection", "true or false"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\ntls: {enabled: true}\n", "", "own SVID"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\nextauthz: {trust_xfcc: true}\n", "extauthz", "proxy_id"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\nextauthz:\n  routes: [{prefix: v1, target: x}]\n",
     "extauthz.routes[0]", "prefix"),
    ("policy: p.yaml\ntrust: {bundles: [b.pem]}\ntls: {allowed_clients: [https://x]}\n", "tls.allowed_clients",
     "spiffe"),
    ("- just\n- a list\n", "", "mapping"),
    ("policy: [unclosed\n", "", "not valid YAML"),
])
def test_config_errors_are_located(tmp_path: Path, text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "sidecar.yaml")) and where in message and what in message.lower() + what


@pytest.mark.parametrize("address", ["unix:/a/b.sock", "unix:///a/b.sock", "127.0.0.1:0", "[::1]:9191", "localhost:80"])
def test_listen_addresses(address: str) -> None:
    assert parse_listen(address)


@pytest.mark.parametrize("address", ["", "unix:", "1.2.3.4", "host:99999", "http://x:1", ":80"])
def test_bad_listen_addresses(address: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(address)
