"""Identity templates: compile rules, matching semantics, first match wins, Identity is a value."""

from __future__ import annotations

import dataclasses

import pytest

from ztid.errors import IdentityError
from ztid.identity import Identity, IdentityTemplate
from ztid.policy import parse_policy
from ztid.spiffeid import SpiffeId

NS = IdentityTemplate.parse("spiffe://ai-platform.example/ns/{tenant}/sa/{component}")
REST = IdentityTemplate.parse("spiffe://ai-platform.example/{component}/{workload...}")


def m(template: IdentityTemplate, text: str) -> dict[str, str] | None:
    got = template.match(SpiffeId.parse(text))
    return None if got is None else dict(got)


@pytest.mark.parametrize(("text", "captures"), [
    ("spiffe://ai-platform.example/ns/team-a/sa/training", {"tenant": "team-a", "component": "training"}),
    ("spiffe://ai-platform.example/ns/team-a/sa/training/extra", None),  # {name} is exactly one segment
    ("spiffe://ai-platform.example/ns/team-a/sa", None),
    ("spiffe://ai-platform.example/NS/team-a/sa/training", None),  # literals are exact (case-sensitive)
    ("spiffe://ai-platform.example/ns/team-a/SA/training", None),
    ("spiffe://other.example/ns/team-a/sa/training", None),  # the trust domain is literal
])
def test_single_segment_captures(text: str, captures: dict[str, str] | None) -> None:
    assert m(NS, text) == captures


@pytest.mark.parametrize(("text", "captures"), [
    ("spiffe://ai-platform.example/training/job-7", {"component": "training", "workload": "job-7"}),
    ("spiffe://ai-platform.example/training/job-7/rank-0", {"component": "training", "workload": "job-7/rank-0"}),
    ("spiffe://ai-platform.example/training", None),  # {workload...} needs at least one segment
    ("spiffe://ai-platform.example", None),
])
def test_rest_capture(text: str, captures: dict[str, str] | None) -> None:
    assert m(REST, text) == captures


@pytest.mark.parametrize(("template", "why"), [
    ("http://ai-platform.example/{component}", "must start with 'spiffe://'"),
    ("spiffe://ai-platform.example", "needs at least one path segment"),
    ("spiffe://ai-platform.example/", "needs at least one path segment"),
    ("spiffe://{tenant}.example/{component}", "the trust domain cannot be a placeholder"),
    ("spiffe://Ai.example/{component}", "bad trust domain: invalid trust domain: trust domain must be lowercase ('Ai.example')"),
    ("spiffe://ai-platform.example//{component}", "empty path segment"),
    ("spiffe://ai-platform.example/{component}/", "empty path segment"),
    ("spiffe://ai-platform.example/../{component}", "literal segment '..' is not a valid SPIFFE ID path segment"),
    ("spiffe://ai-platform.example/a b/{component}", "literal segment 'a b' is not a valid SPIFFE ID path segment"),
    ("spiffe://ai-platform.example/x{component}", "a placeholder must be a whole segment, like '{component}', not 'x{component}'"),
    ("spiffe://ai-platform.example/{component}x", "a placeholder must be a whole segment, like '{component}', not '{component}x'"),
    ("spiffe://ai-platform.example/{{component}}", "a placeholder must be a whole segment, like '{component}', not '{{component}}'"),
    ("spiffe://ai-platform.example/{team}/{component}", "unknown placeholder {team}; known are component, tenant, workload"),
    ("spiffe://ai-platform.example/{}/{component}", "unknown placeholder {}; known are component, tenant, workload"),
    ("spiffe://ai-platform.example/{component}/{component}", "placeholder {component} appears twice"),
    ("spiffe://ai-platform.example/{component...}", "only {workload...} may capture several segments, not {component...}"),
    ("spiffe://ai-platform.example/{workload...}/{component}", "{workload...} must be the last segment"),
    ("spiffe://ai-platform.example/ns/{tenant}", "must capture {component}"),
])
def test_bad_templates(template: str, why: str) -> None:
    with pytest.raises(IdentityError) as info:
        IdentityTemplate.parse(template)
    assert str(info.value) == f"invalid identity template: {why} ({template!r})"
    assert info.value.rule == "template"


def test_first_match_wins() -> None:
    policy = parse_policy("""\
version: 1
trust_domain: ai-platform.example
identities:
  - spiffe://ai-platform.example/{component}/{workload...}
  - spiffe://ai-platform.example/ns/{tenant}/sa/{component}
components: {training: {}}
""")
    ident = policy.identify("spiffe://ai-platform.example/ns/team-a/sa/training")
    # the first template swallows the Kubernetes form: component 'ns'
    assert (ident.component, ident.tenant, ident.workload) == ("ns", None, "team-a/sa/training")
    assert ident.template == "spiffe://ai-platform.example/{component}/{workload...}"


def test_identify_unmatched_and_types(shipped) -> None:
    ident = shipped.identify(SpiffeId.parse("spiffe://ai-platform.example/training"))
    assert ident == Identity.unmapped(SpiffeId.parse("spiffe://ai-platform.example/training"))
    assert ident.component is None and ident.template is None
    with pytest.raises(IdentityError):
        shipped.identify("spiffe://ai-platform.example/training/")


def test_identity_is_a_frozen_value_never_a_string(shipped) -> None:
    a = shipped.identify("spiffe://ai-platform.example/ns/team-a/sa/training")
    b = shipped.identify(SpiffeId.parse("spiffe://ai-platform.example/ns/team-a/sa/training"))
    assert a == b and hash(a) == hash(b)
    assert a != "spiffe://ai-platform.example/ns/team-a/sa/training"
    assert str(a) == "spiffe://ai-platform.example/ns/team-a/sa/training"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.component = "inference"  # type: ignore[misc]
