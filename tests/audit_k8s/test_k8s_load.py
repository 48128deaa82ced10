"""Reading manifests: YAML streams, kubectl List dumps, lines, malformed input, live mode via kubectl."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.audit.k8s import audit_k8s, audit_manifests, parse_manifests
from ztid.audit.k8s_load import load_live
from ztid.errors import AuditError

FIXTURES = Path(__file__).parent / "fixtures"


def test_alias_expansion_is_bounded():
    # nine levels of ten aliases each: 10**9 nodes once expanded, from a few hundred bytes
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "\n".join(lines) + "\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    with pytest.raises(AuditError, match="aliases expand"):
        parse_manifests(text, source="bomb.yaml")


def test_yaml_merge_keys_are_not_duplicates():
    text = "base: &b {name: c, image: i}\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n" \
           "spec: {containers: [{<<: *b, securityContext: {privileged: true}}]}\n"
    [m] = parse_manifests(text)
    assert m.obj["spec"]["containers"][0]["name"] == "c"


def test_multi_document_yaml_keeps_lines_and_skips_empty_documents():
    text = textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: a}
        ---
        ---
        # comment only documents are empty
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: s, namespace: a}
        """)
    ms = parse_manifests(text, source="x.yaml")
    assert [(m.kind, m.location.line) for m in ms] == [("Namespace", 2), ("Service", 9)]


def test_yaml_list_items_get_their_own_lines():
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Namespace
            metadata: {name: a}
          - apiVersion: v1
            kind: Namespace
            metadata: {name: b}
        """)
    assert [m.location.line for m in parse_manifests(text)] == [4, 7]


def test_kubectl_typed_list_json():
    doc = {"apiVersion": "v1", "kind": "PodList", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": []}}]}
    ms = parse_manifests(json.dumps(doc), source="pods.json")
    assert [(m.kind, m.name, m.namespace) for m in ms] == [("Pod", "p", "n")]


@pytest.mark.parametrize("text, fragment", [
    ("kind: Pod\nmetadata: {name: [unclosed", "malformed YAML"),
    ("- just\n- a list\n", "not a Kubernetes object"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "without a 'kind'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "without metadata.name"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: [a]}\n", "metadata.namespace"),
    ('{"kind": "List", "items": {"a": 1}}', "items is not a list"),
    ('{"kind": "Pod", ', "malformed JSON"),
    (b"\xff\xfekind: Pod", "not UTF-8"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {name: c}}\n", "spec.containers must be a list"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, securityContext: 1}]}\n",
     "securityContext must be a mapping"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: []}\n", "spec.template must be"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec: {podSelector: {}, "
     "policyTypes: Ingress}\n", "spec.policyTypes must be a list"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    securityContext:\n"
     "      privileged: true\n      privileged: false\n", "duplicate key 'privileged'"),
    ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"hostPID": true, "hostPID": false}}',
     "duplicate JSON member 'hostPID'"),
])
def test_malformed_input_is_a_located_audit_error(text, fragment):
    with pytest.raises(AuditError) as info:
        audit_manifests(parse_manifests(text, source="bad.yaml"))
    assert fragment in str(info.value) and "bad.yaml" in str(info.value)


def test_missing_path_is_an_audit_error(tmp_path):
    with pytest.raises(AuditError, match="no such file"):
        audit_k8s([tmp_path / "nope.yaml"])


def test_directory_walk_reads_only_manifest_suffixes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostPID: true}\n")
    (tmp_path / "README.md").write_text("# not yaml: [")
    report = audit_k8s([tmp_path])
    assert any(f.rule.id == "ZT-K8S-003" for f in report.findings)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8))
_json = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=20)
_keys = st.sampled_from(["spec", "template", "containers", "initContainers", "securityContext", "hostNetwork",
                         "podSelector", "policyTypes", "egress", "ingress", "env", "value", "resources", "limits",
                         "mtls", "mode", "selector", "rules", "type", "data", "volumes", "hostPath", "items",
                         "capabilities", "add", "jobTemplate", "pytorchReplicaSpecs", "Worker", "portLevelMtls"])
_k8sish = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_keys, c, max_size=4)),
                       max_leaves=25)
_kinds = st.sampled_from(["Pod", "Deployment", "CronJob", "PyTorchJob", "NetworkPolicy", "PeerAuthentication",
                          "AuthorizationPolicy", "Service", "Secret", "ConfigMap", "ServiceAccount", "Namespace", "List"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_any_text_parses_or_raises_audit_error(text):
    try:
        audit_manifests(parse_manifests(text))
    except AuditError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=_kinds, spec=_k8sish, extra=_k8sish)
def test_fuzz_structured_objects_never_crash(kind, spec, extra, policy):
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "n"}, "spec": spec,
           "items": extra, "data": extra, "type": extra}
    try:
        report = audit_manifests(parse_manifests(json.dumps(obj)), policy=policy)
    except AuditError:
        return
    for f in report.findings:
        assert f.rule.id.startswith("ZT-K8S-")


def _fake_kubectl(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "kubectl"
    exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_live_reads_core_kinds_then_optional_crds_and_strips_secret_data(tmp_path):
    log = tmp_path / "calls.txt"
    exe = _fake_kubectl(tmp_path, f"""
        import json, sys
        args = sys.argv[1:]
        open({str(log)!r}, "a").write(" ".join(args) + "\\n")
        kinds = args[args.index("get") + 1]
        if "peerauthentications" in kinds or "pytorchjobs" in kinds:
            sys.stderr.write('error: the server doesn\\'t have a resource type "x"\\n'); sys.exit(1)
        items = []
        if kinds == "secrets":
            assert args[args.index("--field-selector") + 1] == "type=kubernetes.io/service-account-token"
            items = [
              {{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {{"name": "t", "namespace": "ml", "annotations": {{
                  "kubectl.kubernetes.io/last-applied-configuration": "{{\\"data\\": \\"c2VjcmV0\\"}}"}}}},
                "data": {{"token": "c2VjcmV0LXRva2Vu"}}}}]
        if kinds.startswith("namespaces"):
            items = [
              {{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "ml"}}}},
              {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p", "namespace": "ml"}},
                "spec": {{"hostIPC": True, "containers": [{{"name": "c", "image": "i"}}]}}}}]
        print(json.dumps({{"apiVersion": "v1", "kind": "List", "items": items}}))
    """)
    manifests, notes = load_live(kubectl=exe, context="lab")
    secret = next(m for m in manifests if m.kind == "Secret")
    assert "data" not in secret.obj and "last-applied-configuration" not in json.dumps(secret.obj)
    assert any("peerauthentications" in n for n in notes) and any("pytorchjobs" in n for n in notes)
    calls = log.read_text().splitlines()
    assert calls[0].startswith("--context lab get namespaces,pods,") and "--all-namespaces -o json" in calls[0]
    assert "secrets" not in calls[0].split()[2]  # listing Secrets is optional, and filtered by type
    report = audit_k8s([], live=True, kubectl=exe)
    ids = {f.rule.id for f in report.findings}
    assert {"ZT-K8S-004", "ZT-K8S-012", "ZT-K8S-001"} <= ids


def test_live_failure_on_core_kinds_is_an_audit_error(tmp_path):
    exe = _fake_kubectl(tmp_path, """
        import sys
        sys.stderr.write("The connection to the server localhost:8080 was refused\\n"); sys.exit(1)
    """)
    with pytest.raises(AuditError, match="connection to the server"):
        load_live(kubectl=exe)


def test_live_without_kubectl_is_an_audit_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AuditError, match="needs kubectl"):
        load_live(kubectl="kubectl-not-installed")
    assert os.environ["PATH"] == str(tmp_path)
