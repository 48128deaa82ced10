"""Property tests: the loader lets only PolicyError escape; decide() never raises and never allows garbage."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.errors import PolicyError
from ztid.policy import Decision, load_policy, parse_policy
from ztid.spiffeid import SpiffeId

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"
TEXT = SHIPPED.read_text()
POLICY = load_policy(SHIPPED)
def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["version", "trust_domain", "identities", "components", "federation", "actions", "tenancy", "mode", "allow",
         "deny", "bundle", "training", "data-store", "read", "write", "isolated", "audit", "enforce", "shared",
         "ai-platform.example", "spiffe://ai-platform.example/{component}/{workload...}",
         "spiffe://ai-platform.example/ns/{tenant}/sa/{component}", "spiffe://x/{team}", "{component}", "<<", "1"]
scalars = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.integers(-3, 3), st.booleans(), st.none(),
                    st.floats(allow_nan=False, width=16))
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers(0, 3), st.booleans())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


def near_valid() -> st.SearchStrategy[dict]:
    """Documents with the right top-level keys and plausible, often wrong, values: reaches deep checks."""
    actions = st.lists(st.sampled_from(["read", "write"] * 6 + ["wrtie", "", "Read", 1, None]), max_size=3)
    targets = st.sampled_from(["training", "data-store", "inference"] * 4 + ["nobody", "", 3])
    component = st.one_of(
        st.none(), st.just({}),
        st.fixed_dictionaries({}, optional={"allow": st.dictionaries(targets, actions, max_size=3),
                                            "deny": st.lists(targets, max_size=3), "alow": st.just({})}),
    )
    return st.fixed_dictionaries(
        {"version": st.sampled_from([1] * 12 + [2, "1", True]),
         "trust_domain": st.sampled_from(["ai-platform.example"] * 12 + ["AI.example", "", "spiffe://x", 5]),
         "identities": st.lists(st.sampled_from(["spiffe://ai-platform.example/{component}/{workload...}"] * 4 + [
             "spiffe://ai-platform.example/ns/{tenant}/sa/{component}", "spiffe://x/{team}", "{component}",
             "spiffe://ai-platform.example/{component}", "spiffe://other.example/{component}"]), max_size=3, unique=True),
         "components": st.dictionaries(st.sampled_from(["training", "data-store", "inference"] * 4 + ["bad name", 7]),
                                       component, max_size=4)},
        optional={"mode": st.sampled_from(["audit", "enforce", "x", None]),
                  "tenancy": st.sampled_from(["isolated", "shared", 1]),
                  "actions": actions,
                  "federation": st.dictionaries(st.sampled_from(["partner.example", "ai-platform.example", "X"]),
                                                st.one_of(st.none(), st.just({"bundle": "b.pem"}),
                                                          st.just({"bundel": 1})), max_size=2)},
    )


def only_policy_errors(text: str | bytes) -> None:
    try:
        policy = parse_policy(text, name="fuzz.yaml")
    except PolicyError as exc:
        assert exc.location.startswith("fuzz.yaml:")
        return
    # whatever loaded must decide without raising
    assert isinstance(policy.decide("spiffe://ai-platform.example/training/x", "data-store", "read"), Decision)


@fuzz(400)
@given(documents)
def test_loader_structures(doc) -> None:
    only_policy_errors(yaml.safe_dump(doc, sort_keys=False))


@fuzz(500)
@given(near_valid())
def test_loader_near_valid_structures(doc) -> None:
    only_policy_errors(yaml.safe_dump(doc, sort_keys=False))


@fuzz(400)
@given(st.lists(st.tuples(st.integers(0, len(TEXT)), st.integers(0, 6), st.text(max_size=4)), min_size=1, max_size=4))
def test_loader_mutated_shipped_text(edits) -> None:
    text = TEXT
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut:]
    only_policy_errors(text)


@fuzz(800)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_loader_raw_input(data) -> None:
    only_policy_errors(data)


segments = st.sampled_from(["training", "inference", "registry", "pipeline", "data-store", "ns", "sa", "team-a",
                            "", ".", "..", "job-7", "Training", "%41", "a b"])
sources = st.one_of(
    st.text(max_size=80),
    st.lists(segments, max_size=5).map(lambda segs: "spiffe://ai-platform.example/" + "/".join(segs)),
    st.builds(lambda td, p: f"spiffe://{td}/{p}", st.sampled_from(["ai-platform.example", "evil.example", "AI-platform.example",
                                                                   "ai-platform.example:443", ""]), st.text(max_size=20)),
    st.none(), st.integers(), st.binary(max_size=10),
)
names = st.one_of(st.sampled_from(sorted(POLICY.components) + ["read", "write"]), st.text(max_size=12), st.none(),
                  st.integers(), st.lists(st.text(max_size=3), max_size=2))

ALLOWED = {(r.source, r.target, a) for r in POLICY.rules() if r.effect == "allow" for a in r.actions}


@fuzz(1500)
@given(sources, names, names, st.one_of(st.none(), st.text(max_size=8), st.integers()))
def test_decide_never_raises_and_never_allows_garbage(source, target, action, tenant) -> None:
    d = POLICY.decide(source, target, action, target_tenant=tenant)
    assert isinstance(d, Decision) and isinstance(d.code, str) and d.reason
    assert d.allowed == (d.code == "allowed")
    if d.allowed:
        sid = SpiffeId.parse(source)  # an allow means the source was a valid SPIFFE ID...
        ident = POLICY.identify(sid)
        assert sid.trust_domain == POLICY.trust_domain
        assert (ident.component, target, action) in ALLOWED  # ...of a component the matrix lets through
        assert tenant is None or ident.tenant == tenant
