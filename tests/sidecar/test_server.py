"""The sidecar as Envoy sees it: a real grpc.aio server, a real gRPC client, Envoy-shaped CheckRequests."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.protobuf import json_format
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ztid.audit.log_verify import verify_log
from ztid.bundle import BundleSet
from ztid.enforce.xfcc import XfccElement, format_xfcc
from ztid.sidecar.config import SidecarConfig
from ztid.enforce.extauthz_config import ExtAuthzConfig

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"
INFERENCE = f"spiffe://{TD}/inference/web"
PROXY = f"spiffe://{TD}/envoy/edge"
WRITE_REGISTRY = {"ztid.target": "registry", "ztid.action": "write"}
OK, DENIED = code_pb2.OK, code_pb2.PERMISSION_DENIED


def reason(resp: ea.CheckResponse) -> str:
    return json.loads(resp.denied_response.body)["reason"] if resp.status.code != OK else "allowed"


def config(trust: Any, policy: Path, listen: list[str], **kw: Any) -> SidecarConfig:
    return SidecarConfig(policy=str(policy), listen=tuple(listen), bundles=(str(trust.bundle),),
                         svid_cert=str(trust.cert), svid_key=str(trust.key), reload_interval=0.05, **kw)


def xfcc(minted: Any, *, by: str = PROXY, uris: tuple[str, ...]) -> str:
    der = minted.leaf.public_bytes(serialization.Encoding.DER)
    return format_xfcc([XfccElement(by=(by,), hash=hashlib.sha256(der).hexdigest(), chain=minted.chain_pem().decode(),
                                    uri=uris)])


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_envoy_shaped_requests_over_a_real_server(
    transport: str, trust: Any, policy_file: Path, sock: str, run_sidecar: Callable[..., Any],
    make_request: Callable[..., ea.CheckRequest], stub_for: Callable[..., Any], tmp_path: Path,
) -> None:
    listen = sock if transport == "unix" else "127.0.0.1:0"
    cfg = config(trust, policy_file, [listen], decision_log=str(tmp_path / "d.log"),
                 extauthz=ExtAuthzConfig(trust_xfcc=True, proxy_id=PROXY))
    ca, partner = trust.ca, trust.partner
    training, inference, proxy = ca.mint(TRAINING), ca.mint(INFERENCE), ca.mint(PROXY)
    via_proxy = {"principal": PROXY, "certificate": proxy.chain_pem(), "context_extensions": WRITE_REGISTRY}
    cases = [
        ("allow", make_request(principal=TRAINING, certificate=training.chain_pem(), method="POST",
                               context_extensions=WRITE_REGISTRY), "allowed"),
        ("deny", make_request(principal=INFERENCE, certificate=inference.chain_pem(), method="POST",
                              context_extensions=WRITE_REGISTRY), "no_matching_rule"),
        ("no principal", make_request(context_extensions=WRITE_REGISTRY), "no_peer"),
        ("dns principal", make_request(principal="inference.svc.cluster.local", context_extensions=WRITE_REGISTRY),
         "peer_not_spiffe"),
        ("subject principal", make_request(principal="CN=training,O=ai", context_extensions=WRITE_REGISTRY),
         "peer_not_spiffe"),
        ("mismatch", make_request(principal=TRAINING, certificate=inference.chain_pem(),
                                  context_extensions=WRITE_REGISTRY), "peer_mismatch"),
        ("xfcc ok", make_request(headers={"x-forwarded-client-cert": xfcc(training, uris=(TRAINING,))}, **via_proxy),
         "allowed"),
        ("xfcc wrong By", make_request(headers={"x-forwarded-client-cert": xfcc(training, by=f"spiffe://{TD}/evil",
                                                                                uris=(TRAINING,))}, **via_proxy),
         "xfcc_untrusted"),
        ("xfcc two URIs", make_request(headers={"x-forwarded-client-cert": xfcc(training, uris=(TRAINING, INFERENCE))},
                                       **via_proxy), "xfcc_bad_uri"),
        ("xfcc foreign chain", make_request(headers={"x-forwarded-client-cert": xfcc(partner.mint(TRAINING),
                                                                                     uris=(TRAINING,))}, **via_proxy),
         "xfcc_certificate_invalid"),
        ("empty request", ea.CheckRequest(), "no_peer"),
    ]
    with run_sidecar(cfg) as run:
        stub = stub_for(run.target())
        for name, req, expected in cases:
            resp = stub.Check(req, timeout=5)
            assert reason(resp) == expected, name
            assert resp.status.code == (OK if expected == "allowed" else DENIED), name
            if expected != "allowed":
                assert resp.denied_response.status.code == 403, name
        # a request that is not a CheckRequest at all: still an answer, never an RPC error
        channel = grpc.insecure_channel(run.target())
        garbage = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                      request_serializer=lambda b: b, response_deserializer=ea.CheckResponse.FromString)
        resp = garbage(b"\xff\xff\xff\xff garbage", timeout=5)
        channel.close()
        assert resp.status.code == DENIED and reason(resp) == "malformed_request"
    r = verify_log(tmp_path / "d.log", BundleSet.load(str(trust.bundle)))
    assert r.ok and r.decisions == len(cases) + 1 and r.unsigned_tail == 0


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_not_serving_until_loaded_and_checks_denied_meanwhile(
    trust: Any, tmp_path: Path, sock: str, run_sidecar: Callable[..., Any], make_request: Callable[..., Any],
    stub_for: Callable[..., Any],
) -> None:
    policy = tmp_path / "late-policy.yaml"  # does not exist yet
    with run_sidecar(config(trust, policy, [sock]), wait=False) as run:
        assert health(sock) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health(sock, "envoy.service.auth.v3.Authorization") == health_pb2.HealthCheckResponse.NOT_SERVING
        resp = stub_for(sock).Check(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY), timeout=5)
        assert reason(resp) == "no_policy"
        policy.write_bytes(Path(__file__).resolve().parents[2].joinpath("policy.yaml").read_bytes())
        run.call(run.sidecar.wait_loaded(15))
        assert health(sock) == health_pb2.HealthCheckResponse.SERVING
        resp = stub_for(sock).Check(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY), timeout=5)
        assert resp.status.code == OK


def test_policy_reloaded_under_load_gives_no_failed_or_wrong_answer(
    trust: Any, policy_file: Path, sock: str, run_sidecar: Callable[..., Any], make_request: Callable[..., Any],
    stub_for: Callable[..., Any],
) -> None:
    enforce = policy_file.read_bytes()
    audit = enforce.replace(b"\nmode: enforce", b"\nmode: audit")
    digests = {hashlib.sha256(enforce).hexdigest(): "enforce", hashlib.sha256(audit).hexdigest(): "audit"}
    req = make_request(principal=INFERENCE, context_extensions=WRITE_REGISTRY)  # denied in enforce, allowed in audit
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with run_sidecar(config(trust, policy_file, [sock])) as run:
        stub = stub_for(sock)

        def load() -> None:
            while not stop.is_set():
                try:
                    resp = stub.Check(req, timeout=5)
                    meta = json_format.MessageToDict(resp.dynamic_metadata)
                    answers.append((resp.status.code, meta["policy_digest"]))
                except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                    errors.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        tmp = policy_file.with_suffix(".tmp")
        for i in range(12):
            tmp.write_bytes(audit if i % 2 == 0 else enforce)
            tmp.replace(policy_file)  # atomic, as a ConfigMap update or an editor's save does
            assert run.sidecar.reload() in (True, False)
            time.sleep(0.03)
        stop.set()
        for w in workers:
            w.join()
        reloads = run.sidecar.metrics.reloads.labels(result="success")._value.get()
    assert not errors
    assert len(answers) > 50
    for status, digest in answers:
        mode = digests[digest]  # every answer came from one of the two policies, whole
        assert status == (OK if mode == "audit" else DENIED)
    assert {digests[d] for _, d in answers} == {"enforce", "audit"}
    assert reloads >= 2


def test_broken_policy_keeps_the_old_one(
    trust: Any, policy_file: Path, sock: str, run_sidecar: Callable[..., Any], make_request: Callable[..., Any],
    stub_for: Callable[..., Any],
) -> None:
    with run_sidecar(config(trust, policy_file, [sock], metrics="127.0.0.1:0")) as run:
        good = run.sidecar.authz.evaluate(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY))
        policy_file.write_text(policy_file.read_text().replace("registry: [read, write]", "registry: [read, wrtie]"))
        assert run.sidecar.reload() is False
        resp = stub_for(sock).Check(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY), timeout=5)
        assert resp.status.code == OK
        assert json_format.MessageToDict(resp.dynamic_metadata)["policy_digest"] == good.decision.policy_digest
        text = urllib.request.urlopen(f"http://127.0.0.1:{run.sidecar.metrics_port}/metrics", timeout=5).read().decode()
    failures = re.search(r'^ztid_policy_reloads_total\{result="failure"\} (\S+)$', text, re.M)
    assert failures and float(failures.group(1)) >= 1  # the poller and reload() may both have seen it
    assert f'ztid_policy_info{{digest="{good.decision.policy_digest}"}} 1.0' in text
    assert 'ztid_authz_decisions_total{decision="allow",reason_code="allowed"}' in text
    assert "spiffe://" not in text  # no identities as label values
    assert "ztid_svid_expiry_timestamp_seconds" in text and "ztid_authz_check_duration_seconds_bucket" in text


def test_stale_socket_is_replaced_but_a_live_one_is_refused(
    trust: Any, policy_file: Path, sock: str, run_sidecar: Callable[..., Any]
) -> None:
    import socket as pysocket

    from ztid.errors import TransportError

    stale = pysocket.socket(pysocket.AF_UNIX)
    stale.bind(sock[len("unix:"):])
    stale.close()  # the file stays, nobody listens: what a crash leaves
    with run_sidecar(config(trust, policy_file, [sock])):
        assert health(sock) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(TransportError, match="another server"):
            with run_sidecar(config(trust, policy_file, [sock]), wait=False):
                pass


def test_reflection_lists_the_services(trust: Any, policy_file: Path, sock: str, run_sidecar: Callable[..., Any]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with run_sidecar(config(trust, policy_file, [sock], reflection=True)):
        with grpc.insecure_channel(sock) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for r in responses for s in r.list_services_response.service}
    assert "envoy.service.auth.v3.Authorization" in names and "grpc.health.v1.Health" in names
