"""Replayed plans: a Check answered from a plan is exactly the Check the whole mapping would answer.

The first Check with a set of decision inputs runs the whole mapping and keeps a plan; later ones
with the same inputs replay it. Each property compares a long-lived ExtAuthz (replaying) with a
fresh one per request (always the whole mapping): same decision, same answer bytes once the
decision id is put back, same decision log line once id, time, seq and chain are put back.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as ea
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.audit.decisions import DecisionLog
from ztid.enforce.extauthz import ExtAuthz, ExtAuthzConfig, Route, _plan_key
from ztid.testing import TestCA, bundle_set

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"
INFERENCE = f"spiffe://{TD}/inference/web"
PROXY = f"spiffe://{TD}/envoy/edge"
VOLATILE = ("decision_id", "time", "seq", "prev")


def _normal(out: Any) -> tuple[Any, ...]:
    """An outcome with its decision id replaced by a fixed one, for comparing two evaluations."""
    wire = out.wire.replace(out.decision_id.encode(), b"#" * len(out.decision_id))
    d = out.decision
    return d.allowed, d.code, d.rule, d.reason, str(d.target), d.action, wire


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in VOLATILE} for line in lines if line["kind"] == "decision"]


@pytest.fixture(scope="module")
def certs(ca: TestCA, partner: TestCA) -> dict[str, bytes]:
    return {"training": ca.mint(TRAINING).chain_pem(), "inference": ca.mint(INFERENCE).chain_pem(),
            "proxy": ca.mint(PROXY).chain_pem(), "partner": partner.mint("spiffe://partner.example/training/x").chain_pem()}


requests = st.fixed_dictionaries({
    "principal": st.sampled_from([TRAINING, INFERENCE, PROXY, "", "CN=legacy", "spiffe://bad/../x"]),
    "cert": st.sampled_from([None, "training", "inference", "proxy", "partner"]),
    "ext": st.sampled_from([{}, {"ztid.target": "registry", "ztid.action": "write"}, {"ztid.target": "data-store"},
                            {"ztid.action": "read"}, {"ztid.target": "no-such-component"}]),
    "destination": st.sampled_from(["", f"spiffe://{TD}/registry/main", f"spiffe://{TD}/data-store/s3"]),
    "method": st.sampled_from(["GET", "POST", "DELETE"]),
    "path": st.sampled_from(["/", "/v1/models/a", "/v1/data/x", "/v1/models/../admin"]),
    "headers": st.sampled_from([{}, {"x-ztid-peer": "spoof"}, {"x-ztid-admin": "1", "x-ztid-component": "x"},
                                {"X-Ztid-Upper": "1"}]),
    "xfcc": st.sampled_from([None, "proxy-ok", "wrong-by", "two-uris"]),
    "request_id": st.text("abc123", min_size=1, max_size=6),
    "raw_header_map": st.booleans(),
})


def _build(spec: dict[str, Any], certs: dict[str, bytes], make_request: Callable[..., ea.CheckRequest]) -> ea.CheckRequest:
    headers = dict(spec["headers"])
    if spec["xfcc"] == "proxy-ok":
        headers["x-forwarded-client-cert"] = f'By={PROXY};URI={TRAINING}'
    elif spec["xfcc"] == "wrong-by":
        headers["x-forwarded-client-cert"] = f'By=spiffe://{TD}/other;URI={TRAINING}'
    elif spec["xfcc"] == "two-uris":
        headers["x-forwarded-client-cert"] = f'By={PROXY};URI={TRAINING};URI={INFERENCE}'
    req = make_request(principal=spec["principal"], certificate=None if spec["cert"] is None else certs[spec["cert"]],
                       destination=spec["destination"], method=spec["method"], path=spec["path"], headers=headers,
                       context_extensions=spec["ext"])
    req.attributes.request.http.id = spec["request_id"]
    if spec["raw_header_map"]:  # encode_raw_headers: Envoy sends header_map instead of headers
        for name, value in req.attributes.request.http.headers.items():
            req.attributes.request.http.header_map.headers.append(base_pb2.HeaderValue(key=name, raw_value=value.encode()))
        req.attributes.request.http.ClearField("headers")
    return req


CONFIGS = {
    "plain": ExtAuthzConfig(),
    "xfcc": ExtAuthzConfig(trust_xfcc=True, proxy_id=PROXY),
    "routes": ExtAuthzConfig(routes=(Route(method="GET", prefix="/v1/models", target="registry", action="read"),
                                     Route(method="*", prefix="/v1/data", target="data-store"))),
}


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_a_replayed_check_equals_the_whole_mapping(config_name: str, policy: Any, bundles: Any, certs: dict[str, bytes],
                                                    make_request: Callable[..., ea.CheckRequest], tmp_path: Path) -> None:
    config = CONFIGS[config_name]
    replay_log, fresh_log = DecisionLog(tmp_path / "replay.log"), DecisionLog(tmp_path / "fresh.log")
    replaying = ExtAuthz(policy, bundles, config=config, log=replay_log)
    seen = {"replays": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(requests, min_size=1, max_size=6), st.data())
    def run(specs: list[dict[str, Any]], data: st.DataObject) -> None:
        base = data.draw(st.sampled_from(specs))
        field = data.draw(st.sampled_from(sorted(base)))
        variant = {**base, field: data.draw(requests)[field]}  # an earlier input with one field changed
        for spec in [*specs, base, variant, variant]:
            req = _build(spec, certs, make_request)
            key = _plan_key(req, config)
            seen["replays"] += key is not None and key in replaying._plans
            got = replaying.evaluate(req)
            want = ExtAuthz(policy, bundles, config=config, log=fresh_log).evaluate(req)
            assert _normal(got) == _normal(want)

    run()
    replay_log.close()
    fresh_log.close()
    assert seen["replays"] > 50  # the property did exercise replays, not only first Checks
    assert _log_lines(tmp_path / "replay.log") == _log_lines(tmp_path / "fresh.log")


def test_a_plan_ends_with_the_certificate_it_verified(ca: TestCA, policy: Any, bundles: Any,
                                                      make_request: Callable[..., ea.CheckRequest]) -> None:
    now = dt.datetime.now(dt.UTC)
    short = ca.mint(TRAINING, not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(seconds=2))
    authz = ExtAuthz(policy, bundles)
    req = make_request(principal=TRAINING, certificate=short.chain_pem(), method="POST",
                       context_extensions={"ztid.target": "registry", "ztid.action": "write"})
    assert authz.evaluate(req).decision.allowed
    assert authz.evaluate(req).decision.allowed and len(authz._plans) == 1
    time.sleep(max(0.0, short.leaf.not_valid_after_utc.timestamp() - time.time()) + 1.1)
    out = authz.evaluate(req)
    assert not out.decision.allowed and out.decision.code == "peer_certificate_invalid"


def test_a_plan_ends_when_the_policy_or_the_bundles_change(ca: TestCA, partner: TestCA, policy: Any, bundles: Any,
                                                           make_request: Callable[..., ea.CheckRequest]) -> None:
    current = {"policy": policy, "bundles": bundles}
    authz = ExtAuthz(lambda: current["policy"], lambda: current["bundles"])
    req = make_request(principal=TRAINING, certificate=ca.mint(TRAINING).chain_pem(), method="POST",
                       context_extensions={"ztid.target": "registry", "ztid.action": "write"})
    assert authz.evaluate(req).decision.allowed and authz.evaluate(req).decision.allowed
    from ztid.policy import parse_policy

    text = (Path(__file__).resolve().parents[2] / "policy.yaml").read_text()
    revoked = parse_policy(text.replace("mode: enforce", "mode: enforce\n# revoked"), name="revoked.yaml")
    revoked_decision = revoked.decide(TRAINING, "registry", "write")
    current["policy"] = revoked
    assert authz.evaluate(req).decision is revoked_decision  # decided by the new policy object
    current["bundles"] = bundle_set(partner)  # the CA that issued the peer is no longer trusted
    out = authz.evaluate(req)
    assert not out.decision.allowed and out.decision.code == "peer_certificate_invalid"


PAIRS = {  # two requests that differ in one decision input, and the config under which it counts
    "principal": ("plain", {"principal": TRAINING}, {"principal": INFERENCE}),
    "certificate": ("plain", {"cert": "training"}, {"cert": "inference"}),
    "destination": ("plain", {"destination": f"spiffe://{TD}/registry/main"}, {"destination": ""}),
    "target": ("plain", {"ext": {"ztid.target": "registry"}}, {"ext": {"ztid.target": "data-store"}}),
    "action": ("plain", {"ext": {"ztid.target": "registry", "ztid.action": "read"}},
               {"ext": {"ztid.target": "registry", "ztid.action": "write"}}),
    "method": ("plain", {"method": "GET"}, {"method": "POST"}),
    "path": ("routes", {"path": "/v1/models/a"}, {"path": "/"}),
    "xfcc": ("xfcc", {"xfcc": "proxy-ok"}, {"xfcc": "wrong-by"}),
    "x-ztid headers": ("plain", {"headers": {}}, {"headers": {"x-ztid-admin": "1"}}),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_decision_input_is_part_of_the_plan(name: str, policy: Any, bundles: Any, certs: dict[str, bytes],
                                                  make_request: Callable[..., ea.CheckRequest]) -> None:
    config_name, first, second = PAIRS[name]
    base = {"principal": INFERENCE, "cert": None, "ext": {"ztid.target": "registry"}, "destination": "",
            "method": "GET", "path": "/v1/models/a", "headers": {}, "xfcc": None, "request_id": "1",
            "raw_header_map": False}
    if name in ("path", "destination"):
        base["ext"] = {}  # the target must come from the route or the destination
    if name == "xfcc":
        base["principal"], base["cert"] = PROXY, "proxy"
    if name == "certificate":
        base["principal"] = TRAINING
    replaying = ExtAuthz(policy, bundles, config=CONFIGS[config_name])
    outcomes = []
    for change in (first, second, first, second):
        req = _build({**base, **change}, certs, make_request)
        got = replaying.evaluate(req)
        assert _normal(got) == _normal(ExtAuthz(policy, bundles, config=CONFIGS[config_name]).evaluate(req))
        outcomes.append(_normal(got))
    assert outcomes[0] != outcomes[1]  # the input does change the answer, so a plan keyed without it would show


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=3000), st.text(max_size=300), st.text(max_size=200))
def test_the_log_extra_of_a_check_is_the_canonical_json_of_its_fields(method: str, path: str, host: str,
                                                                      request_id: str) -> None:
    from envoy.service.auth.v3 import attribute_context_pb2 as ac

    from ztid.audit.decisions import extra_json
    from ztid.enforce.extauthz import _http_extra

    http = ac.AttributeContext.HttpRequest(method=method, path=path, host=host, id=request_id)
    want = extra_json({"enforcer": "extauthz", "method": method, "path": path[:2048], "host": host[:256],
                       "request_id": request_id[:128]})
    assert _http_extra(http) == want
    assert json.loads(want[len(b'"extra":'):-1])["path"] == path[:2048]  # the fragment is the JSON of the fields


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_a_replayed_allow_is_a_deny_once_the_log_cannot_be_written(ca: TestCA, policy: Any, bundles: Any,
                                                                  make_request: Callable[..., ea.CheckRequest],
                                                                  tmp_path: Path) -> None:
    import os

    log = DecisionLog(tmp_path / "d.log")
    authz = ExtAuthz(policy, bundles, log=log)
    req = make_request(principal=TRAINING, certificate=ca.mint(TRAINING).chain_pem(), method="POST",
                       context_extensions={"ztid.target": "registry", "ztid.action": "write"})
    assert authz.evaluate(req).decision.allowed and authz.evaluate(req).decision.allowed  # planned, then replayed
    assert len(authz._plans) == 1
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, log._fd)  # the disk is full now: every write(2) fails with ENOSPC
    finally:
        os.close(full)
    for _ in range(2):  # the replay, and the same request again once the log refuses everything
        out = authz.evaluate(req)
        assert not out.decision.allowed and out.decision.code == "audit_log_failed"
        assert ea.CheckResponse.FromString(out.wire).status.code != 0
