"""The shipped policy.yaml, cell by cell: every allowed pair and action, every explicit deny, the rest."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from ztid.policy import load_policy
from ztid.spiffeid import SpiffeId

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"

# The matrix of the issue, written out independently of policy.yaml.
RW = {"read", "write"}
ALLOW = {
    ("training", "data-store"): {"read"},
    ("training", "registry"): RW,
    ("training", "experiment-tracker"): RW,
    ("training", "feature-store"): {"read"},
    ("training", "training"): RW,
    ("inference", "registry"): {"read"},
    ("inference", "feature-store"): {"read"},
    ("registry", "data-store"): RW,
    ("pipeline", "training"): RW,
    ("pipeline", "registry"): RW,
    ("pipeline", "data-store"): RW,
    ("pipeline", "feature-store"): RW,
}
DENY = {
    ("training", "inference"), ("training", "monitoring-admin"),
    ("inference", "training"), ("inference", "data-store"),
    ("registry", "training"), ("registry", "inference"),
    ("pipeline", "inference"),
}
COMPONENTS = ["training", "inference", "registry", "pipeline", "data-store", "feature-store",
              "experiment-tracker", "monitoring-admin"]
FORMS = {
    "workload": "spiffe://ai-platform.example/{c}/job-7/rank-0",
    "kubernetes": "spiffe://ai-platform.example/ns/team-a/sa/{c}",
}


def expected(src: str, dst: str, action: str) -> tuple[bool, str, str | None]:
    if (src, dst) in DENY:
        return False, "explicit_deny", f"components.{src}.deny.{dst}"
    if action in ALLOW.get((src, dst), ()):
        return True, "allowed", f"components.{src}.allow.{dst}"
    return False, "no_matching_rule", None


CELLS = list(itertools.product(COMPONENTS, COMPONENTS, ["read", "write"], FORMS))


def test_the_shipped_policy_loads_and_declares_the_matrix(shipped) -> None:
    assert shipped.components == frozenset(COMPONENTS)
    assert shipped.actions == frozenset(RW)
    assert (shipped.mode, shipped.tenancy) == ("enforce", "isolated")
    allow = {(r.source, r.target): set(r.actions) for r in shipped.rules() if r.effect == "allow"}
    deny = {(r.source, r.target) for r in shipped.rules() if r.effect == "deny"}
    assert allow == ALLOW and deny == DENY
    assert shipped.digest == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


@pytest.mark.parametrize(("src", "dst", "action", "form"), CELLS)
def test_every_cell(shipped, src: str, dst: str, action: str, form: str) -> None:
    source = FORMS[form].format(c=src)
    d = shipped.decide(source, dst, action)
    assert (d.allowed, d.code, d.rule) == expected(src, dst, action)
    assert d.policy_digest == shipped.digest
    assert d.source is not None and d.source.component == src
    assert (d.target, d.action, d.mode, d.would_deny) == (dst, action, "enforce", False)
    # the same question asked with a parsed SpiffeId gets the same answer
    again = shipped.decide(SpiffeId.parse(source), dst, action)
    assert (again.allowed, again.code, again.rule) == (d.allowed, d.code, d.rule)


def test_the_table_covers_every_allowed_action_and_deny() -> None:
    allowed = {(s, t, a) for s, t, a, _ in CELLS if expected(s, t, a)[0]}
    assert allowed == {(s, t, a) for (s, t), acts in ALLOW.items() for a in acts}
    assert {(s, t) for s, t, a, _ in CELLS if expected(s, t, a)[1] == "explicit_deny"} == DENY


@pytest.mark.parametrize(("source", "target", "action", "code"), [
    ("spiffe://ai-platform.example/training/job-7", "data-store", "write", "no_matching_rule"),
    ("spiffe://ai-platform.example/inference/svc", "registry", "write", "no_matching_rule"),
    ("spiffe://ai-platform.example/monitoring-admin/x", "training", "read", "no_matching_rule"),
    ("spiffe://ai-platform.example/notebook/alice", "data-store", "read", "unknown_component"),
    ("spiffe://ai-platform.example/ns/team-a/sa/notebook", "data-store", "read", "unknown_component"),
    ("spiffe://ai-platform.example/training", "data-store", "read", "unknown_component"),  # no template matches
    ("spiffe://ai-platform.example/ns/team-a/sa/training/x", "data-store", "read", "unknown_component"),  # component 'ns'
    ("spiffe://ai-platform.example/training/job-7", "billing", "read", "unknown_target"),
    ("spiffe://ai-platform.example/training/job-7", "Data-Store", "read", "unknown_target"),
    ("spiffe://ai-platform.example/training/job-7", "data-store", "delete", "unknown_action"),
    ("spiffe://ai-platform.example/training/job-7", "data-store", "READ", "unknown_action"),
    ("spiffe://partner.example/training/job-7", "data-store", "read", "foreign_trust_domain"),
    ("spiffe://ai-platform.example.evil/training/job-7", "data-store", "read", "foreign_trust_domain"),
])
def test_unknown_pairs_and_names_are_denied(shipped, source: str, target: str, action: str, code: str) -> None:
    d = shipped.decide(source, target, action)
    assert not d.allowed
    assert d.code == code
    assert d.rule is None
    assert d.policy_digest == shipped.digest


def test_copies_of_the_policy_decide_alike(tmp_path) -> None:
    copy = tmp_path / "policy.yaml"
    copy.write_bytes(SHIPPED.read_bytes())
    a, b = load_policy(SHIPPED), load_policy(copy)
    assert a.digest == b.digest
    for src, dst, action, form in CELLS[::7]:
        assert a.decide(FORMS[form].format(c=src), dst, action) == b.decide(FORMS[form].format(c=src), dst, action)
