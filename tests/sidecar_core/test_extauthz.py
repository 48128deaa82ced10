"""The pure ext_authz mapping, fed CheckRequests built as Envoy builds them, with the shipped policy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.protobuf import json_format
from google.rpc import code_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.audit.decisions import DecisionLog
from ztid.audit.log_verify import verify_log
from ztid.enforce.extauthz import REASON_CODES, ExtAuthz, ExtAuthzConfig, Route, default_action
from ztid.enforce.xfcc import XfccElement, format_xfcc
from ztid.errors import ConfigError
from ztid.svid import spiffe_id_from_leaf
from ztid.testing import TestCA

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"
INFERENCE = f"spiffe://{TD}/inference/web"
REGISTRY = f"spiffe://{TD}/registry/main"
PROXY = f"spiffe://{TD}/envoy/edge"
WRITE_REGISTRY = {"ztid.target": "registry", "ztid.action": "write"}

MakeRequest = Callable[..., ea.CheckRequest]


def body(resp: ea.CheckResponse) -> dict[str, Any]:
    return json.loads(resp.denied_response.body)


def meta(resp: ea.CheckResponse) -> dict[str, Any]:
    return json_format.MessageToDict(resp.dynamic_metadata)


def headers(resp: ea.CheckResponse) -> dict[str, str]:
    return {h.header.key: h.header.value for h in resp.ok_response.headers}


def assert_denied(resp: ea.CheckResponse, code: str) -> None:
    assert resp.status.code == code_pb2.PERMISSION_DENIED, resp
    assert resp.denied_response.status.code == 403
    assert body(resp)["reason"] == code
    assert set(body(resp)) == {"decision_id", "reason"}
    assert not resp.HasField("ok_response")


@pytest.fixture(scope="module")
def certs(ca: TestCA) -> dict[str, Any]:
    return {name: ca.mint(sid) for name, sid in
            {"training": TRAINING, "inference": INFERENCE, "proxy": PROXY}.items()}


@pytest.fixture
def authz(policy: Any, bundles: Any) -> ExtAuthz:
    return ExtAuthz(policy, bundles)


@pytest.fixture
def xfcc_authz(policy: Any, bundles: Any) -> ExtAuthz:
    return ExtAuthz(policy, bundles, config=ExtAuthzConfig(trust_xfcc=True, proxy_id=PROXY))


# ---------------------------------------------------------------- principal and certificate

def test_allow_with_principal_and_certificate(authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    req = make_request(principal=TRAINING, certificate=certs["training"].chain_pem(), method="POST",
                       path="/v1/models", context_extensions=WRITE_REGISTRY)
    out = authz.evaluate(req)
    resp = out.response
    assert resp.status.code == code_pb2.OK and not resp.HasField("denied_response")
    h = headers(resp)
    assert h == {"x-ztid-peer": TRAINING, "x-ztid-component": "training", "x-ztid-decision-id": out.decision_id}
    m = meta(resp)
    assert m["spiffe_id"] == TRAINING and m["component"] == "training" and m["decision_id"] == out.decision_id
    assert m["rule"] == "components.training.allow.registry" and m["allowed"] is True
    assert "tenant" not in m  # the /{component}/{workload...} template has no tenant


def test_deny_by_policy(authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    req = make_request(principal=INFERENCE, certificate=certs["inference"].chain_pem(), method="POST",
                       context_extensions=WRITE_REGISTRY)
    out = authz.evaluate(req)
    assert_denied(out.response, "no_matching_rule")
    assert body(out.response)["decision_id"] == out.decision_id
    assert "inference" not in out.response.denied_response.body  # the body leaks only the code


def test_explicit_deny_reason_code(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal=INFERENCE, context_extensions={"ztid.target": "data-store", "ztid.action": "read"})
    assert_denied(authz.check(req), "explicit_deny")


def test_principal_without_certificate_is_accepted_by_default(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY)
    assert authz.check(req).status.code == code_pb2.OK


def test_require_certificate(policy: Any, bundles: Any, make_request: MakeRequest) -> None:
    authz = ExtAuthz(policy, bundles, config=ExtAuthzConfig(require_certificate=True))
    assert_denied(authz.check(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY)),
                  "peer_certificate_missing")


def test_no_principal(authz: ExtAuthz, make_request: MakeRequest) -> None:
    assert_denied(authz.check(make_request(context_extensions=WRITE_REGISTRY)), "no_peer")


@pytest.mark.parametrize("principal", ["client.example.com", "CN=training,O=ai-platform", "SPIFFE://ai-platform.example/training/x",
                                       "https://ai-platform.example/training/x"])
def test_non_spiffe_principal(authz: ExtAuthz, make_request: MakeRequest, principal: str) -> None:
    assert_denied(authz.check(make_request(principal=principal, context_extensions=WRITE_REGISTRY)), "peer_not_spiffe")


def test_malformed_spiffe_principal(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal="spiffe://AI-platform.example/training/x", context_extensions=WRITE_REGISTRY)
    assert_denied(authz.check(req), "malformed_identity")


def test_principal_certificate_mismatch(authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    req = make_request(principal=TRAINING, certificate=certs["inference"].chain_pem(), context_extensions=WRITE_REGISTRY)
    assert_denied(authz.check(req), "peer_mismatch")


def test_certificate_from_another_trust_domain_claiming_ours(
    authz: ExtAuthz, make_request: MakeRequest, partner: TestCA
) -> None:
    forged = partner.mint(TRAINING)  # partner's CA signs a leaf naming our trust domain
    req = make_request(principal=TRAINING, certificate=forged.chain_pem(), context_extensions=WRITE_REGISTRY)
    assert_denied(authz.check(req), "peer_certificate_invalid")


def test_garbage_certificate(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY)
    req.attributes.source.certificate = "-----BEGIN%20CERTIFICATE-----%0Anope"
    assert_denied(authz.check(req), "peer_certificate_invalid")


def test_foreign_trust_domain_principal(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal="spiffe://partner.example/training/x", context_extensions=WRITE_REGISTRY)
    assert_denied(authz.check(req), "foreign_trust_domain")


# ---------------------------------------------------------------- XFCC

def xfcc_for(minted: Any, *, by: str = PROXY, uris: tuple[str, ...] | None = None, chain: bool = True,
             hash_override: str | None = None) -> str:
    der = minted.leaf.public_bytes(serialization.Encoding.DER)
    pem = minted.chain_pem().decode()
    el = XfccElement(
        by=(by,), hash=hash_override or hashlib.sha256(der).hexdigest(),
        cert=minted.leaf.public_bytes(serialization.Encoding.PEM).decode(), chain=pem if chain else None,
        subject="O=ztid test workload",
        uri=uris if uris is not None else (str(spiffe_id_from_leaf(minted.leaf)),),
    )
    return format_xfcc([el])


def via_proxy(make_request: MakeRequest, certs: dict[str, Any], xfcc: str, **kw: Any) -> ea.CheckRequest:
    return make_request(principal=PROXY, certificate=certs["proxy"].chain_pem(), headers={"x-forwarded-client-cert": xfcc},
                        context_extensions=WRITE_REGISTRY, **kw)


def test_xfcc_from_the_trusted_proxy(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    resp = xfcc_authz.check(via_proxy(make_request, certs, xfcc_for(certs["training"])))
    assert resp.status.code == code_pb2.OK
    assert headers(resp)["x-ztid-peer"] == TRAINING


def test_xfcc_last_element_counts_earlier_ones_are_history(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]
) -> None:
    spoofed = f"By={PROXY};URI={TRAINING}"
    resp = xfcc_authz.check(via_proxy(make_request, certs, spoofed + "," + xfcc_for(certs["inference"])))
    assert_denied(resp, "no_matching_rule")  # inference, from the last element, may not write the registry


def test_xfcc_appended_after_the_proxy_is_untrusted(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]
) -> None:
    header = xfcc_for(certs["training"]) + f",By=spiffe://{TD}/evil;URI={TRAINING}"
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_untrusted")


def test_xfcc_wrong_by(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    header = xfcc_for(certs["training"], by=f"spiffe://{TD}/envoy/other")
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_untrusted")


def test_xfcc_two_uris(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    header = xfcc_for(certs["training"], uris=(TRAINING, INFERENCE), chain=False)
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_bad_uri")


def test_xfcc_no_uri(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, f"By={PROXY};URI=")), "xfcc_bad_uri")


def test_xfcc_chain_from_another_trust_domain(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any], partner: TestCA
) -> None:
    header = xfcc_for(partner.mint(TRAINING))
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_certificate_invalid")


def test_xfcc_hash_mismatch(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    header = xfcc_for(certs["training"], hash_override="0" * 64)
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_hash_mismatch")


def test_xfcc_uri_disagrees_with_its_certificate(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]
) -> None:
    header = xfcc_for(certs["inference"], uris=(TRAINING,))
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, header)), "xfcc_mismatch")


def test_xfcc_cert_that_is_not_the_chain_leaf(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]
) -> None:
    training, inference = certs["training"], certs["inference"]
    der = training.leaf.public_bytes(serialization.Encoding.DER)
    el = XfccElement(by=(PROXY,), hash=hashlib.sha256(der).hexdigest(), chain=training.chain_pem().decode(),
                     cert=inference.leaf.public_bytes(serialization.Encoding.PEM).decode(), uri=(TRAINING,))
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, format_xfcc([el]))), "xfcc_mismatch")


def test_xfcc_over_a_plaintext_hop(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    req = make_request(headers={"x-forwarded-client-cert": xfcc_for(certs["training"])}, context_extensions=WRITE_REGISTRY)
    assert_denied(xfcc_authz.check(req), "xfcc_untrusted")


def test_xfcc_from_a_peer_that_is_neither_proxy_nor_client(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]
) -> None:
    req = make_request(principal=INFERENCE, certificate=certs["inference"].chain_pem(),
                       headers={"x-forwarded-client-cert": xfcc_for(certs["training"])}, context_extensions=WRITE_REGISTRY)
    assert_denied(xfcc_authz.check(req), "xfcc_mismatch")


def test_xfcc_malformed(xfcc_authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    assert_denied(xfcc_authz.check(via_proxy(make_request, certs, 'By="unterminated')), "xfcc_malformed")


def test_xfcc_ignored_unless_configured(authz: ExtAuthz, make_request: MakeRequest, certs: dict[str, Any]) -> None:
    req = make_request(principal=INFERENCE, headers={"x-forwarded-client-cert": xfcc_for(certs["training"])},
                       context_extensions=WRITE_REGISTRY)
    assert_denied(authz.check(req), "no_matching_rule")  # still inference: the header was not read


def test_trust_xfcc_requires_a_proxy_id() -> None:
    with pytest.raises(ConfigError, match="proxy_id"):
        ExtAuthzConfig(trust_xfcc=True)
    with pytest.raises(ConfigError, match="proxy_id"):
        ExtAuthzConfig(trust_xfcc=True, proxy_id="https://not-spiffe")


# ---------------------------------------------------------------- target and action

def test_target_from_the_destination_principal(authz: ExtAuthz, make_request: MakeRequest) -> None:
    out = authz.evaluate(make_request(principal=TRAINING, destination=REGISTRY, method="PUT", path="/v1/models/x"))
    assert out.response.status.code == code_pb2.OK
    assert (out.decision.target, out.decision.action) == ("registry", "write")


def test_tenancy_from_the_destination(authz: ExtAuthz, make_request: MakeRequest) -> None:
    src = f"spiffe://{TD}/ns/team-a/sa/training"
    ok = make_request(principal=src, destination=f"spiffe://{TD}/ns/team-a/sa/registry")
    bad = make_request(principal=src, destination=f"spiffe://{TD}/ns/team-b/sa/registry")
    assert authz.check(ok).status.code == code_pb2.OK
    assert_denied(authz.check(bad), "tenant_mismatch")


@pytest.mark.parametrize("method, action", [("GET", "read"), ("HEAD", "read"), ("OPTIONS", "read"), ("POST", "write"),
                                            ("PUT", "write"), ("DELETE", "write"), ("PATCH", "write"), ("BREW", "write")])
def test_default_action_by_method(method: str, action: str) -> None:
    assert default_action(method) == action


def test_routes_map(policy: Any, bundles: Any, make_request: MakeRequest) -> None:
    config = ExtAuthzConfig(routes=[{"method": "GET", "prefix": "/v1/models", "target": "registry"},
                                    {"prefix": "/v1/features", "target": "feature-store", "action": "read"},
                                    {"prefix": "/", "target": "data-store"}])
    authz = ExtAuthz(policy, bundles, config=config)

    def decide(method: str, path: str) -> Any:
        return authz.evaluate(make_request(principal=TRAINING, method=method, path=path)).decision

    d = decide("GET", "/v1/models/llama?rev=2")
    assert (d.target, d.action, d.allowed) == ("registry", "read", True)
    d = decide("POST", "/v1/features/online")
    assert (d.target, d.action, d.allowed) == ("feature-store", "read", True)
    d = decide("POST", "/v1/modelsx")  # whole segments only: falls through to '/'
    assert (d.target, d.action, d.allowed) == ("data-store", "write", False)
    assert decide("GET", "/v1/models/../../admin").code == "malformed_request"
    assert decide("GET", "/v1/models/%2e%2e/admin").code == "malformed_request"


def test_bad_routes_are_config_errors() -> None:
    for bad in ({"prefix": "v1", "target": "x"}, {"prefix": "/a", "target": "X Y"}, {"prefix": "/a"},
                {"prefix": "/a", "target": "x", "colour": "red"}, {"method": "get", "prefix": "/", "target": "x"}):
        with pytest.raises(ConfigError):
            ExtAuthzConfig(routes=[bad])
    assert ExtAuthzConfig(routes=[Route("GET", "/a", "registry")]).match("get", "/a/b") is not None


def test_no_target(authz: ExtAuthz, make_request: MakeRequest) -> None:
    assert_denied(authz.check(make_request(principal=TRAINING)), "no_target")


def test_target_never_from_client_headers(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal=TRAINING, headers={"x-ztid-target": "registry", "ztid.target": "registry",
                                                    "x-ztid-action": "write"})
    assert_denied(authz.check(req), "no_target")


# ---------------------------------------------------------------- headers, audit mode, failures

def test_client_x_ztid_headers_are_removed_or_overwritten(authz: ExtAuthz, make_request: MakeRequest) -> None:
    req = make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY,
                       headers={"x-ztid-peer": "spiffe://ai-platform.example/pipeline/x", "x-ztid-admin": "1",
                                "X-ZTID-Tenant": "root", "x-other": "kept"})
    resp = authz.check(req)
    assert resp.status.code == code_pb2.OK
    assert headers(resp)["x-ztid-peer"] == TRAINING
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in resp.ok_response.headers)
    assert sorted(resp.ok_response.headers_to_remove) == ["x-ztid-admin", "x-ztid-tenant"]


def test_audit_mode_answers_ok_and_logs_would_deny(
    audit_policy: Any, bundles: Any, make_request: MakeRequest, tmp_path: Path, signer: Any
) -> None:
    with DecisionLog(tmp_path / "d.log", signer=signer) as log:
        authz = ExtAuthz(audit_policy, bundles, log=log)
        out = authz.evaluate(make_request(principal=INFERENCE, context_extensions=WRITE_REGISTRY))
        assert out.response.status.code == code_pb2.OK
        assert meta(out.response)["would_deny"] is True
        # identity failures stay denies in audit mode
        assert_denied(authz.check(make_request(principal="CN=x", context_extensions=WRITE_REGISTRY)), "peer_not_spiffe")
    lines = [json.loads(x) for x in (tmp_path / "d.log").read_text().splitlines()]
    rec = next(x for x in lines if x.get("decision_id") == out.decision_id)
    assert rec["would_deny"] is True and rec["allowed"] is True and rec["mode"] == "audit"


def test_every_decision_is_logged_before_the_answer(
    policy: Any, bundles: Any, make_request: MakeRequest, tmp_path: Path, signer: Any
) -> None:
    path = tmp_path / "d.log"
    log = DecisionLog(path, signer=signer, checkpoint_every=3)
    authz = ExtAuthz(policy, bundles, log=log)
    ids = [authz.evaluate(make_request(principal=p, context_extensions=WRITE_REGISTRY, path="/p")).decision_id
           for p in (TRAINING, INFERENCE, "", "dns.example", TRAINING)]
    logged = [x for x in map(json.loads, path.read_text().splitlines()) if x["kind"] == "decision"]
    assert [x["decision_id"] for x in logged] == ids
    assert logged[0]["extra"] == {"enforcer": "extauthz", "method": "GET", "path": "/p", "host": "svc.local",
                                  "request_id": "1234"}
    assert logged[2]["peer"] is None and logged[2]["reason_code"] == "no_peer"
    assert logged[3]["peer"] == "dns.example" and logged[3]["reason_code"] == "peer_not_spiffe"
    log.close()
    # After the log fails, every answer is a deny.
    assert_denied(authz.check(make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY)), "audit_log_failed")
    assert verify_log(path, bundles).ok


@pytest.mark.parametrize("request_obj", [None, {"attributes": {}}, b"\x00", ea.CheckResponse()])
def test_malformed_request_is_denied(authz: ExtAuthz, request_obj: Any) -> None:
    assert_denied(authz.check(request_obj), "malformed_request")


def test_failures_of_dependencies_are_denies(bundles: Any, policy: Any, make_request: MakeRequest,
                                             certs: dict[str, Any]) -> None:
    req = make_request(principal=TRAINING, certificate=certs["training"].chain_pem(), context_extensions=WRITE_REGISTRY)

    def broken() -> Any:
        raise RuntimeError("boom")

    assert_denied(ExtAuthz(broken, bundles).check(req), "internal_error")
    assert_denied(ExtAuthz(lambda: None, bundles).check(req), "no_policy")
    assert_denied(ExtAuthz(policy, broken).check(req), "internal_error")


def test_internal_errors_are_logged_denies(bundles: Any, make_request: MakeRequest, tmp_path: Path) -> None:
    class Exploding:
        digest, mode = "x" * 64, "enforce"

        def identify(self, spiffe_id: Any) -> Any:
            raise RuntimeError("bug")

        def decide(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug")

    with DecisionLog(tmp_path / "d.log") as log:
        out = ExtAuthz(Exploding(), bundles, log=log).evaluate(
            make_request(principal=TRAINING, destination=REGISTRY, context_extensions=WRITE_REGISTRY))
    assert_denied(out.response, "internal_error")
    logged = [json.loads(x) for x in (tmp_path / "d.log").read_text().splitlines()][1:]
    assert [(x["decision_id"], x["reason_code"]) for x in logged] == [(out.decision_id, "internal_error")]


def test_policy_and_bundles_are_read_per_request(policy: Any, audit_policy: Any, bundles: Any,
                                                 make_request: MakeRequest) -> None:
    current = {"policy": policy}
    authz = ExtAuthz(lambda: current["policy"], lambda: bundles)
    req = make_request(principal=INFERENCE, context_extensions=WRITE_REGISTRY)
    assert authz.check(req).status.code == code_pb2.PERMISSION_DENIED
    current["policy"] = audit_policy
    assert authz.check(req).status.code == code_pb2.OK


def test_removed_anchor_stops_trust_at_once(policy: Any, ca: TestCA, make_request: MakeRequest,
                                            certs: dict[str, Any]) -> None:
    from ztid.testing import bundle_set

    current = {"bundles": bundle_set(ca)}
    authz = ExtAuthz(policy, lambda: current["bundles"])
    req = make_request(principal=TRAINING, certificate=certs["training"].chain_pem(), context_extensions=WRITE_REGISTRY)
    assert authz.check(req).status.code == code_pb2.OK  # verified, and now cached
    current["bundles"] = bundle_set(TestCA.create(TD))  # the anchor rotated away
    assert_denied(authz.check(req), "peer_certificate_invalid")


def test_reason_codes_are_metric_label_safe() -> None:
    assert all(code.replace("_", "").isalpha() and code.islower() for code in REASON_CODES)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(principal=st.text(max_size=60), certificate=st.text(max_size=60), xfcc=st.text(max_size=80),
       path=st.text(max_size=40), method=st.text(max_size=8))
def test_arbitrary_fields_never_raise_and_never_allow_strangers(
    xfcc_authz: ExtAuthz, make_request: MakeRequest, principal: str, certificate: str, xfcc: str, path: str, method: str
) -> None:
    req = make_request(principal=principal, method=method, path=path, headers={"x-forwarded-client-cert": xfcc},
                       context_extensions=WRITE_REGISTRY)
    req.attributes.source.certificate = certificate
    resp = xfcc_authz.check(req)
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    assert body(resp)["reason"]


# ---------------------------------------------------------------- the serialized allow template

def test_allow_wire_is_the_template_with_each_decision_id(authz: ExtAuthz, make_request: MakeRequest,
                                                          certs: dict[str, Any]) -> None:
    from ztid.enforce.extauthz_response import allowed_response

    req = make_request(principal=TRAINING, certificate=certs["training"].chain_pem(), method="POST",
                       headers={"x-ztid-admin": "1"}, context_extensions=WRITE_REGISTRY)
    first, second = authz.evaluate(req), authz.evaluate(req)
    assert first.decision_id != second.decision_id
    for out in (first, second):
        built = allowed_response(out.decision, out.decision_id, ("x-ztid-admin",))
        assert ea.CheckResponse.FromString(out.wire) == built  # spliced bytes == the message built field by field
        assert out.response == built
        assert headers(out.response)["x-ztid-decision-id"] == out.decision_id == meta(out.response)["decision_id"]
    assert "~" not in first.wire.decode("latin-1")  # no placeholder left behind


def test_allow_with_an_id_of_another_shape_builds_the_message(policy: Any, bundles: Any, make_request: MakeRequest,
                                                              certs: dict[str, Any]) -> None:
    class Log:  # a decision log whose ids are not 32 hex digits: the splice must not be used
        def prepare(self, decision: Any, peer: Any = None) -> Any:
            return decision

        def record_prepared(self, prepared: Any, extra: bytes = b"") -> str:
            return "short-id"

    authz = ExtAuthz(policy, bundles, log=Log())
    out = authz.evaluate(make_request(principal=TRAINING, certificate=certs["training"].chain_pem(), method="POST",
                                      context_extensions=WRITE_REGISTRY))
    assert out.decision.allowed and out.decision_id == "short-id"
    assert headers(ea.CheckResponse.FromString(out.wire))["x-ztid-decision-id"] == "short-id"
    assert meta(out.response)["decision_id"] == "short-id"
