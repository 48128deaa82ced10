"""Decisions beyond the matrix: tenancy, audit mode, garbage input, caching, explain, federation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ztid.identity import Identity
from ztid.policy import DECISION_CODES, Decision, parse_policy
from ztid.policy.model import AUDITABLE_CODES
from ztid.spiffeid import SpiffeId

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"
TRAINING_A = "spiffe://ai-platform.example/ns/team-a/sa/training"
TRAINING_B = "spiffe://ai-platform.example/ns/team-b/sa/training"
TRAINING_JOB = "spiffe://ai-platform.example/training/job-7/rank-0"


def variant(**changes: str) -> str:
    text = SHIPPED.read_text()
    for key, new in changes.items():
        assert f"\n{key}: " in text
        text = text.replace(f"\n{key}: ", f"\n{key}: {new}  # was: ", 1)
    return text


# -- tenancy ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "target", "tenant", "allowed", "code"), [
    (TRAINING_A, "training", None, True, "allowed"),            # target tenant unknown: not checked
    (TRAINING_A, "training", "team-a", True, "allowed"),
    (TRAINING_A, "training", "team-b", False, "tenant_mismatch"),
    (TRAINING_JOB, "training", "team-a", False, "tenant_mismatch"),  # a source without tenant reaches no tenanted target
    (TRAINING_A, "data-store", "team-a", True, "allowed"),
    (TRAINING_A, "data-store", "team-b", False, "tenant_mismatch"),
    (TRAINING_A, "inference", "team-a", False, "explicit_deny"),    # explicit deny is reported before tenancy
    (TRAINING_A, "data-store", None, True, "allowed"),
])
def test_isolated_tenancy(shipped, source, target, tenant, allowed, code) -> None:
    d = shipped.decide(source, target, "read", target_tenant=tenant)
    assert (d.allowed, d.code, d.target_tenant) == (allowed, code, tenant)


def test_target_identity_carries_its_tenant(shipped) -> None:
    peer_b = SpiffeId.parse(TRAINING_B)
    d = shipped.decide(TRAINING_A, peer_b, "write")
    assert (d.allowed, d.code, d.target, d.target_tenant) == (False, "tenant_mismatch", "training", "team-b")
    d = shipped.decide(TRAINING_A, shipped.identify("spiffe://ai-platform.example/ns/team-a/sa/training"), "write")
    assert (d.allowed, d.code, d.target_tenant) == (True, "allowed", "team-a")
    # an explicit target_tenant overrides the target identity's own
    assert shipped.decide(TRAINING_A, peer_b, "write", target_tenant="team-a").allowed
    # a target identity the templates cannot map is an unknown target
    d = shipped.decide(TRAINING_A, SpiffeId.parse("spiffe://ai-platform.example/x"), "read")
    assert (d.allowed, d.code) == (False, "unknown_target")
    d = shipped.decide(TRAINING_A, SpiffeId.parse("spiffe://other.example/data-store/x"), "read")
    assert (d.allowed, d.code) == (False, "unknown_target")


def test_shared_tenancy_ignores_tenants() -> None:
    policy = parse_policy(variant(tenancy="shared"))
    assert policy.decide(TRAINING_A, "training", "write", target_tenant="team-b").allowed
    assert policy.decide(TRAINING_JOB, "training", "write", target_tenant="team-b").allowed
    assert policy.decide(TRAINING_A, "inference", "read", target_tenant="team-a").code == "explicit_deny"


# -- audit mode ------------------------------------------------------------------------------------

def test_audit_mode_allows_matrix_denies_and_says_so() -> None:
    policy = parse_policy(variant(mode="audit"))
    assert policy.mode == "audit"
    ok = policy.decide(TRAINING_JOB, "data-store", "read")
    assert (ok.allowed, ok.code, ok.would_deny, ok.mode) == (True, "allowed", False, "audit")
    for source, target, action, tenant, code in [
        (TRAINING_JOB, "inference", "read", None, "explicit_deny"),
        (TRAINING_JOB, "data-store", "write", None, "no_matching_rule"),
        (TRAINING_A, "training", "read", "team-b", "tenant_mismatch"),
        ("spiffe://ai-platform.example/notebook/x", "data-store", "read", None, "unknown_component"),
        (TRAINING_JOB, "billing", "read", None, "unknown_target"),
    ]:
        d = policy.decide(source, target, action, target_tenant=tenant)
        assert (d.allowed, d.would_deny, d.code) == (True, True, code)
        assert d.reason.startswith("audit mode: allowed, but enforce mode would deny: ")


@pytest.mark.parametrize(("source", "target", "action", "code"), [
    ("not an id", "data-store", "read", "malformed_identity"),
    ("spiffe://partner.example/training/x", "data-store", "read", "foreign_trust_domain"),
    (TRAINING_JOB, "data-store", "delete", "unknown_action"),
    (TRAINING_JOB, 42, "read", "unknown_target"),
])
def test_audit_mode_still_denies_what_is_not_a_matrix_question(source, target, action, code) -> None:
    d = parse_policy(variant(mode="audit")).decide(source, target, action)
    assert (d.allowed, d.would_deny, d.code) == (False, False, code)


def test_audit_mode_denies_a_tenant_of_the_wrong_type() -> None:
    d = parse_policy(variant(mode="audit")).decide(TRAINING_A, "training", "read", target_tenant=5)  # type: ignore[arg-type]
    assert (d.allowed, d.would_deny, d.code) == (False, False, "tenant_mismatch")


def test_auditable_codes_are_decision_codes() -> None:
    assert AUDITABLE_CODES < DECISION_CODES


# -- garbage in, deny out --------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "", "spiffe://", "spiffe://ai-platform.example", "SPIFFE://ai-platform.example/training/x",
    "spiffe://ai-platform.example/training/x/", "spiffe://ai-platform.example/training//x",
    "spiffe://ai-platform.example/training/../x", "https://ai-platform.example/training/x",
    "spiffe://ai-platform.example/training/x?q=1", "spiffe://ai-platform.example/training/x#f",
    "spiffe://ai-platform.example/training/%41", " spiffe://ai-platform.example/training/x",
    "spiffe://ai-platform.example:443/training/x", "spiffe://user@ai-platform.example/training/x",
    None, 42, b"spiffe://ai-platform.example/training/x", ["x"], {"a": 1}, object(),
])
def test_malformed_sources_are_denied(shipped, source) -> None:
    d = shipped.decide(source, "data-store", "read")
    assert (d.allowed, d.source) == (False, None)
    assert d.code == "malformed_identity"
    assert d.reason


@pytest.mark.parametrize(("target", "action", "code"), [
    (None, "read", "unknown_target"), (["data-store"], "read", "unknown_target"), ("", "read", "unknown_target"),
    ("data-store", None, "unknown_action"), ("data-store", ["read"], "unknown_action"), ("data-store", "", "unknown_action"),
    ("data-store", b"read", "unknown_action"),
])
def test_bad_targets_and_actions_are_denied(shipped, target, action, code) -> None:
    d = shipped.decide(TRAINING_JOB, target, action)
    assert (d.allowed, d.code) == (False, code)
    assert d.source is not None and d.source.component == "training"


def test_bad_target_tenant_type_is_denied(shipped) -> None:
    d = shipped.decide(TRAINING_A, "training", "read", target_tenant=["team-a"])  # type: ignore[arg-type]
    assert (d.allowed, d.code) == (False, "tenant_mismatch")


def test_a_hand_made_identity_is_remapped_by_its_spiffe_id(shipped) -> None:
    sid = SpiffeId.parse("spiffe://ai-platform.example/inference/svc")
    forged = Identity(sid, sid.trust_domain, component="training", template="made up")
    d = shipped.decide(forged, "data-store", "read")
    assert (d.allowed, d.code) == (False, "explicit_deny")
    assert d.source is not None and d.source.component == "inference"


def test_internal_errors_deny(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    policy = parse_policy(SHIPPED.read_text())
    monkeypatch.setattr(type(policy), "_evaluate", boom)
    d = policy.decide(TRAINING_JOB, "data-store", "read")
    assert (d.allowed, d.code, d.policy_digest) == (False, "internal_error", policy.digest)
    assert d.reason == "internal error while deciding: RuntimeError"


# -- caching ---------------------------------------------------------------------------------------

def test_repeated_decisions_are_the_same_value_object() -> None:
    policy = parse_policy(SHIPPED.read_text())
    first = policy.decide(TRAINING_JOB, "data-store", "read")
    assert policy.decide(TRAINING_JOB, "data-store", "read") is first
    # a fresh SpiffeId (not the cached string) reaches the same cached decision
    assert policy.decide(SpiffeId.parse(TRAINING_JOB), "data-store", "read") is first
    assert policy.decide(TRAINING_JOB, "data-store", "read", target_tenant="x") is not first


def test_caches_are_bounded(monkeypatch) -> None:
    from ztid.policy import engine

    monkeypatch.setattr(engine, "CACHE_LIMIT", 8)
    policy = parse_policy(SHIPPED.read_text())
    for i in range(50):
        assert policy.decide(f"spiffe://ai-platform.example/training/job-{i}", "data-store", "read").allowed
    assert len(policy._cache) <= 8 and len(policy._ids) <= 8


def test_policy_is_immutable(shipped) -> None:
    with pytest.raises(AttributeError):
        shipped.mode = "audit"
    with pytest.raises(AttributeError):
        shipped._allow = {}
    assert shipped.mode == "enforce"


def test_decision_deny_and_to_dict() -> None:
    d = Decision.deny("no_peer", "no authenticated peer", policy_digest="ab", target="data-store", action="read")
    assert (d.allowed, d.code, d.would_deny, d.rule, d.source) == (False, "no_peer", False, None, None)
    assert d.to_dict() == {
        "allowed": False, "code": "no_peer", "reason": "no authenticated peer", "rule": None, "policy_digest": "ab",
        "mode": "enforce", "would_deny": False, "source": None, "source_component": None, "source_tenant": None,
        "target": "data-store", "target_tenant": None, "action": "read",
    }


# -- explain ---------------------------------------------------------------------------------------

def _line_of(fragment: str, after: str) -> int:
    lines = SHIPPED.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(after))
    return next(i for i in range(start, len(lines)) if lines[i].strip().startswith(fragment)) + 1


def test_explain_names_template_captures_and_rule(shipped) -> None:
    e = shipped.explain(TRAINING_A, "data-store", "read", target_tenant="team-a")
    assert e.decision == shipped.decide(TRAINING_A, "data-store", "read", target_tenant="team-a")
    assert e.template == "spiffe://ai-platform.example/ns/{tenant}/sa/{component}"
    assert e.captures == {"tenant": "team-a", "component": "training"}
    assert e.templates_tried == (e.template,)
    assert e.rule == "components.training.allow.data-store"
    assert e.rule_line == _line_of("data-store:", "training:")
    assert e.steps[-1] == "ALLOWED (allowed): training may read data-store"
    assert any("identity template #1" in s for s in e.steps)
    data = e.to_dict()
    assert data["decision"]["allowed"] is True and data["rule_line"] == e.rule_line


def test_explain_a_deny(shipped) -> None:
    e = shipped.explain("spiffe://ai-platform.example/inference/svc-1", "data-store", "read")
    assert e.rule == "components.inference.deny.data-store"
    assert e.rule_line == _line_of("deny: [training, data-store]", "inference:")
    assert e.captures == {"component": "inference", "workload": "svc-1"}
    assert len(e.templates_tried) == 2
    assert e.steps[-1].startswith("DENIED (explicit_deny): ")


def test_explain_garbage(shipped) -> None:
    e = shipped.explain("nope", "data-store", "read")
    assert e.template is None and e.rule is None and not e.decision.allowed
    assert e.steps[0].startswith("source is not a valid SPIFFE ID: ")
    e = shipped.explain("spiffe://ai-platform.example/solo", "data-store", "read")
    assert "no identity template matched (tried 2)" in e.steps


# -- federation ------------------------------------------------------------------------------------

FEDERATED = """\
version: 1
trust_domain: ai-platform.example
federation:
  partner.example:
    bundle: bundles/partner.pem
  other.example:
identities:
  - spiffe://ai-platform.example/{component}/{workload...}
  - spiffe://partner.example/{component}/{workload...}
components:
  training:
    allow: {data-store: [read]}
  data-store: {}
"""


def test_federated_trust_domains_map_through_their_templates(write_policy) -> None:
    from ztid.policy import load_policy

    path = write_policy(FEDERATED)
    policy = load_policy(path)
    assert {td.name for td in policy.trust_domains} == {"ai-platform.example", "partner.example", "other.example"}
    assert policy.decide("spiffe://partner.example/training/x", "data-store", "read").allowed
    # federated, but no template names it: a valid ID that maps to no component
    assert policy.decide("spiffe://other.example/training/x", "data-store", "read").code == "unknown_component"
    assert policy.bundle_paths() == {SpiffeId.parse("spiffe://partner.example/x").trust_domain:
                                     path.parent / "bundles" / "partner.pem"}


def test_federation_bundles_load_relative_to_the_policy(write_policy) -> None:
    from ztid.devca import DevCA
    from ztid.errors import BundleError
    from ztid.policy import load_policy

    path = write_policy(FEDERATED)
    policy = load_policy(path)
    with pytest.raises(BundleError):
        policy.load_federation_bundles()  # the file does not exist yet
    ca = DevCA.create("partner.example")
    (path.parent / "bundles").mkdir()
    (path.parent / "bundles" / "partner.pem").write_bytes(ca.bundle().to_pem())
    bundles = policy.load_federation_bundles()
    assert {td.name for td in bundles.trust_domains} == {"partner.example"}
