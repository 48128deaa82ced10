"""Every load error is a PolicyError located as <file>:<line>: <path>, one broken file per rule."""

from __future__ import annotations

import pytest

from ztid.errors import PolicyError
from ztid.policy import load_policy, parse_policy

HEAD = """\
version: 1
trust_domain: ai-platform.example
identities:
  - spiffe://ai-platform.example/ns/{tenant}/sa/{component}
  - spiffe://ai-platform.example/{component}/{workload...}
"""  # 5 lines; "components:" is line 6 in every case built on it

CASES = [
    # (id, document, location, detail)
    ("unknown-action", HEAD + """\
components:
  training:
    allow:
      data-store: [read, wrtie]
  data-store: {}
""", "policy.yaml:9: components.training.allow.data-store", "unknown action 'wrtie'; known actions: read, write"),
    ("unknown-top-key", HEAD + """\
tenency: isolated
components: {}
""", "policy.yaml:6: tenency",
     "unknown key 'tenency'; known keys: version, trust_domain, federation, actions, identities, tenancy, mode, components"),
    ("unknown-component-key", HEAD + """\
components:
  training:
    alow: {}
""", "policy.yaml:8: components.training.alow", "unknown key 'alow'; known keys: allow, deny"),
    ("duplicate-component", HEAD + """\
components:
  training: {}
  data-store: {}
  training:
    allow: {data-store: [read]}
""", "policy.yaml:9: components.training", "duplicate component 'training' (first at line 7)"),
    ("duplicate-top-key", HEAD + """\
mode: enforce
mode: audit
components: {}
""", "policy.yaml:7: mode", "duplicate key 'mode' (first at line 6)"),
    ("duplicate-target", HEAD + """\
components:
  training:
    allow:
      data-store: [read]
      data-store: [write]
  data-store: {}
""", "policy.yaml:10: components.training.allow.data-store", "duplicate target 'data-store' (first at line 9)"),
    ("duplicate-deny", HEAD + """\
components:
  training:
    deny:
      - data-store
      - data-store
  data-store: {}
""", "policy.yaml:10: components.training.deny[1]", "duplicate target 'data-store' (first at line 9)"),
    ("allow-deny-conflict", HEAD + """\
components:
  training:
    allow:
      data-store: [read]
    deny: [inference, data-store]
  inference: {}
  data-store: {}
""", "policy.yaml:10: components.training.deny[1]", "'data-store' is both allowed (line 9) and denied; keep one"),
    ("unknown-allow-target", HEAD + """\
components:
  training:
    allow:
      data-stor: [read]
""", "policy.yaml:9: components.training.allow.data-stor",
     "unknown target component 'data-stor'; declare it under components"),
    ("unknown-deny-target", HEAD + """\
components:
  training:
    deny: [inferense]
""", "policy.yaml:8: components.training.deny[0]", "unknown target component 'inferense'; declare it under components"),
    ("empty-action-list", HEAD + """\
components:
  training:
    allow:
      training: []
""", "policy.yaml:9: components.training.allow.training", "empty action list; remove the entry to allow nothing"),
    ("duplicate-action", HEAD + """\
components:
  training:
    allow:
      training: [read, read]
""", "policy.yaml:9: components.training.allow.training[1]", "duplicate action 'read' (first at line 9)"),
    ("actions-not-a-list", HEAD + """\
components:
  training:
    allow:
      training: read
""", "policy.yaml:9: components.training.allow.training", "action list must be a list, not a string"),
    ("allow-is-a-list", HEAD + """\
components:
  training:
    allow: [training]
""", "policy.yaml:8: components.training.allow", "allow must be a mapping, not a list"),
    ("component-is-a-string", HEAD + """\
components:
  training: yes-please
""", "policy.yaml:7: components.training", "a component must be a mapping, not a string"),
    ("bad-component-name", HEAD + """\
components:
  train ing: {}
""", "policy.yaml:7: components.train ing",
     "invalid component name 'train ing': a component is a SPIFFE ID path segment (A-Z a-z 0-9 . - _)"),
    ("missing-version", """\
trust_domain: ai-platform.example
identities: ["spiffe://ai-platform.example/{component}"]
components: {}
""", "policy.yaml:1: version", "missing required key"),
    ("missing-components", HEAD, "policy.yaml:1: components", "missing required key"),
    ("version-2", HEAD.replace("version: 1", "version: 2") + "components: {}\n",
     "policy.yaml:1: version", "unsupported version 2 (supported: 1)"),
    ("version-string", HEAD.replace("version: 1", "version: '1'") + "components: {}\n",
     "policy.yaml:1: version", "version must be an integer, not a string"),
    ("version-bool", HEAD.replace("version: 1", "version: true") + "components: {}\n",
     "policy.yaml:1: version", "version must be an integer, not a boolean"),
    ("trust-domain-uppercase", HEAD.replace("trust_domain: ai-platform.example", "trust_domain: AI-platform.example")
     + "components: {}\n", "policy.yaml:2: trust_domain",
     "invalid trust domain: trust domain must be lowercase ('AI-platform.example')"),
    ("trust-domain-with-scheme", HEAD.replace("trust_domain: ai-platform.example",
                                              "trust_domain: spiffe://ai-platform.example") + "components: {}\n",
     "policy.yaml:2: trust_domain", "write the trust domain name without 'spiffe://' ('spiffe://ai-platform.example')"),
    ("template-unknown-placeholder", HEAD.replace("{tenant}/sa/{component}", "{tenant}/sa/{compnent}")
     + "components: {}\n", "policy.yaml:4: identities[0]",
     "invalid identity template: unknown placeholder {compnent}; known are component, tenant, workload "
     "('spiffe://ai-platform.example/ns/{tenant}/sa/{compnent}')"),
    ("template-rest-not-last", HEAD.replace("{component}/{workload...}", "{workload...}/{component}")
     + "components: {}\n", "policy.yaml:5: identities[1]",
     "invalid identity template: {workload...} must be the last segment "
     "('spiffe://ai-platform.example/{workload...}/{component}')"),
    ("template-partial-segment", HEAD.replace("{component}/{workload...}", "{component}/job-{workload}")
     + "components: {}\n", "policy.yaml:5: identities[1]",
     "invalid identity template: a placeholder must be a whole segment, like '{component}', not 'job-{workload}' "
     "('spiffe://ai-platform.example/{component}/job-{workload}')"),
    ("template-no-component", HEAD.replace("{component}/{workload...}", "svc/{workload...}")
     + "components: {}\n", "policy.yaml:5: identities[1]",
     "invalid identity template: must capture {component} ('spiffe://ai-platform.example/svc/{workload...}')"),
    ("template-foreign-td", HEAD.replace("spiffe://ai-platform.example/{component}", "spiffe://other.example/{component}")
     + "components: {}\n", "policy.yaml:5: identities[1]",
     "template trust domain 'other.example' is neither the policy's trust domain 'ai-platform.example' nor a "
     "federated one ('spiffe://other.example/{component}/{workload...}')"),
    ("template-duplicate", HEAD + "  - spiffe://ai-platform.example/{component}/{workload...}\ncomponents: {}\n",
     "policy.yaml:6: identities[2]", "duplicate identity template 'spiffe://ai-platform.example/{component}/{workload...}' "
     "(first at line 5)"),
    ("identities-empty", HEAD.split("identities:")[0] + "identities: []\ncomponents: {}\n",
     "policy.yaml:3: identities", "at least one identity template is needed"),
    ("mode-bad", HEAD + "mode: strict\ncomponents: {}\n", "policy.yaml:6: mode", "must be one of enforce, audit, not 'strict'"),
    ("tenancy-bad", HEAD + "tenancy: open\ncomponents: {}\n", "policy.yaml:6: tenancy",
     "must be one of isolated, shared, not 'open'"),
    ("actions-bad-name", HEAD + "actions: [read, Write]\ncomponents: {}\n", "policy.yaml:6: actions[1]",
     "invalid action name 'Write': use lowercase letters, digits, '_', '-', '.'"),
    ("federation-own-td", HEAD + "federation:\n  ai-platform.example: {}\ncomponents: {}\n",
     "policy.yaml:7: federation.ai-platform.example",
     "the policy's own trust domain 'ai-platform.example' cannot also be federated"),
    ("federation-unknown-key", HEAD + "federation:\n  partner.example:\n    bundel: p.pem\ncomponents: {}\n",
     "policy.yaml:8: federation.partner.example.bundel", "unknown key 'bundel'; known keys: bundle"),
    ("federation-bad-td", HEAD + "federation:\n  Partner.example: {bundle: p.pem}\ncomponents: {}\n",
     "policy.yaml:7: federation.Partner.example", "invalid trust domain: trust domain must be lowercase ('Partner.example')"),
    ("yaml-syntax", HEAD + "components:\n  training: [read\n", "policy.yaml:8", "invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("yaml-merge-key", HEAD + "base: &b {allow: {}}\ncomponents:\n  training:\n    <<: *b\n",
     "policy.yaml:9", "invalid YAML: merge keys ('<<') are not allowed"),
    ("empty-document", "# nothing here\n", "policy.yaml:1",
     "the policy is empty; expected a mapping with version, trust_domain, identities, components"),
    ("document-is-a-list", "- version: 1\n", "policy.yaml:1", "the policy must be a mapping, not a list"),
]


@pytest.mark.parametrize(("text", "location", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_policy_is_located(write_policy, text: str, location: str, detail: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, name="policy.yaml")
    assert info.value.location == location
    assert info.value.detail == detail
    assert str(info.value) == f"{location}: {detail}"
    # the same document as a real file: located by the path as given
    path = write_policy(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.location == str(path) + location[len("policy.yaml"):]
    assert info.value.detail == detail


def test_file_errors_name_the_path_as_given(write_policy) -> None:
    path = write_policy(CASES[0][1])
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:9: components.training.allow.data-store: unknown action 'wrtie'; known actions: read, write"


def test_unreadable_file_is_a_policy_error(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.location == str(missing)
    assert info.value.detail.startswith("cannot read policy file: ")
    assert isinstance(info.value.__cause__, OSError)


def test_non_utf8_bytes() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(b"version: 1\ntrust_domain: \xff\n", name="policy.yaml")
    assert str(info.value) == "policy.yaml:2: not UTF-8 text (byte 25)"


def test_yaml_errors_keep_their_cause() -> None:
    import yaml

    with pytest.raises(PolicyError) as info:
        parse_policy("a: [", name="p.yaml")
    assert isinstance(info.value.__cause__, yaml.YAMLError)


def test_unsafe_tags_are_refused() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: !!python/object/apply:os.system ['true']\n", name="p.yaml")
    assert info.value.location == "p.yaml:1"
    assert "could not determine a constructor" in info.value.detail
