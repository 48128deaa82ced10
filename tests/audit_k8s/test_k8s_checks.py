"""Every check of `ztid audit k8s`: one positive and one negative fixture each, plus the two platforms."""

from __future__ import annotations

from collections import Counter

from pathlib import Path

import pytest

from ztid.audit.findings import Severity
from ztid.audit.k8s import K8S_RULES, audit_k8s, audit_manifests, parse_manifests

FIXTURES = Path(__file__).parent / "fixtures"
CHECKS = FIXTURES / "checks"

# How many findings of its own rule each positive fixture must produce.
POSITIVE_COUNTS = {f"ZT-K8S-{i:03d}": 1 for i in range(1, 18)} | {"ZT-K8S-010": 2}


def _fixture(rule_id: str, kind: str):
    matches = sorted(CHECKS.glob(f"{rule_id.lower()}.{kind}.*"))
    assert len(matches) == 1, f"expected exactly one {kind} fixture for {rule_id}, found {matches}"
    return matches[0]


def _policy_for(rule_id, policy, literal_ns_policy):
    return literal_ns_policy if rule_id == "ZT-K8S-017" else policy


def test_every_rule_has_a_fixture_pair_and_a_count():
    ids = [r.id for r in K8S_RULES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert set(POSITIVE_COUNTS) == set(ids)
    for rule_id in ids:
        _fixture(rule_id, "pos")
        _fixture(rule_id, "neg")


@pytest.mark.parametrize("rule_id", [r.id for r in K8S_RULES])
def test_positive_fixture_fires(rule_id, policy, literal_ns_policy):
    report = audit_k8s([_fixture(rule_id, "pos")], policy=_policy_for(rule_id, policy, literal_ns_policy))
    mine = [f for f in report.findings if f.rule.id == rule_id]
    assert len(mine) == POSITIVE_COUNTS[rule_id], [f.message for f in mine]
    for f in mine:
        assert f.message and f.rule.remediation and f.resource.name
        assert f.location is not None and f.location.path.endswith(_fixture(rule_id, "pos").name)


@pytest.mark.parametrize("rule_id", [r.id for r in K8S_RULES])
def test_negative_fixture_is_silent(rule_id, policy, literal_ns_policy):
    report = audit_k8s([_fixture(rule_id, "neg")], policy=_policy_for(rule_id, policy, literal_ns_policy))
    assert [f.message for f in report.findings if f.rule.id == rule_id] == []


def test_good_platform_is_clean_at_every_severity(policy):
    report = audit_k8s([FIXTURES / "platform-good"], policy=policy)
    assert report.findings == ()
    assert report.at_or_above(Severity.INFO) == ()


def test_bad_platform_trips_every_classic_check(policy):
    report = audit_k8s([FIXTURES / "platform-bad"], policy=policy)
    counts = Counter(f.rule.id for f in report.findings)
    expected = {"ZT-K8S-001", "ZT-K8S-002", "ZT-K8S-003", "ZT-K8S-004", "ZT-K8S-005", "ZT-K8S-006", "ZT-K8S-007",
                "ZT-K8S-008", "ZT-K8S-009", "ZT-K8S-010", "ZT-K8S-011", "ZT-K8S-012", "ZT-K8S-013", "ZT-K8S-014",
                "ZT-K8S-015", "ZT-K8S-016"}
    assert set(counts) == expected
    # privileged: the init container (Master), the worker container and the ephemeral debugger
    assert counts["ZT-K8S-005"] == 3
    subjects = {f.message for f in report.findings if f.rule.id == "ZT-K8S-005"}
    assert any("init container" in s for s in subjects) and any("ephemeral container" in s for s in subjects)
    # credentials: the two literals of the training job, two AWS values, the ConfigMap URL
    assert counts["ZT-K8S-014"] == 5


def test_gpu_namespaces_option(policy):
    bad = FIXTURES / "platform-bad"
    report = audit_k8s([bad], policy=policy, gpu_namespaces={"team-b"})
    gpu = [f for f in report.findings if f.rule.id == "ZT-K8S-017"]
    assert [str(f.resource) for f in gpu] == ["Pod/scratch/jupyter-alice"]
    assert "nvidia.com/gpu=1" in gpu[0].message


def test_no_policy_skips_policy_checks_and_says_so():
    report = audit_k8s([FIXTURES / "platform-bad"])
    assert not any(f.rule.id in ("ZT-K8S-016", "ZT-K8S-017") for f in report.findings)
    assert any("ZT-K8S-016" in n for n in report.notes)


def test_credentials_never_echoed(policy):
    report = audit_k8s([FIXTURES / "platform-bad"], policy=policy)
    text = report.render_table() + repr(report.to_dict())
    for secret in ("hf_ztidFixtureNotARealToken", "8f2c0e4b9a7d", "s3cr3t-Passw0rd", "not+a+real+secret"):
        assert secret not in text


def _pod(spec_extra: str, container_extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: team-a}}
spec:
  {spec_extra}
  containers:
    - name: c
      image: i
      {container_extra}
"""


@pytest.mark.parametrize("spec_extra, container_extra, expected", [
    ("securityContext: {runAsNonRoot: true}", "", None),
    ("securityContext: {runAsUser: 1000}", "", None),
    ("securityContext: {runAsNonRoot: true}", "securityContext: {runAsUser: 0}", "ZT-K8S-006"),
    ("securityContext: {runAsUser: 0}", "", "ZT-K8S-006"),
    ("securityContext: {runAsUser: 0}", "securityContext: {runAsUser: 7}", None),
    ("securityContext: {runAsNonRoot: false}", "securityContext: {runAsNonRoot: true}", None),
    ("securityContext: {}", "", "ZT-K8S-007"),
    ("securityContext: {runAsNonRoot: true}", "securityContext: {runAsNonRoot: false}", "ZT-K8S-006"),
])
def test_root_precedence_pod_vs_container(spec_extra, container_extra, expected):
    report = audit_manifests(parse_manifests(_pod(spec_extra, container_extra)))
    got = {f.rule.id for f in report.findings} & {"ZT-K8S-006", "ZT-K8S-007"}
    assert got == ({expected} if expected else set())


@pytest.mark.parametrize("name, value, flagged", [
    ("DB_PASSWORD", "hunter2hunter2", True),
    ("DB_PASSWORD", "$(DB_PASSWORD_FROM_FILE)", False),
    ("DB_PASSWORD_FILE", "/run/secrets/db", False),
    ("LOG_LEVEL", "-----BEGIN RSA PRIVATE KEY-----\nMIIB", True),
    ("MODEL_URI", "s3://bucket/model", False),
    ("MLFLOW_TRACKING_URI", "https://user:pa55word@mlflow.internal", True),
    ("API_TOKEN", "changeme", False),
    ("GITHUB", "ghp_" + "a1B2" * 9, True),
    ("NCCL_SOCKET_IFNAME", "eth0", False),
])
def test_env_credential_shapes(name, value, flagged):
    report = audit_manifests(parse_manifests(_pod("", f"env: [{{name: {name}, value: {value!r}}}]")))
    hits = [f for f in report.findings if f.rule.id == "ZT-K8S-014"]
    assert bool(hits) is flagged
    assert all(value not in f.message for f in hits)


def test_value_from_secret_ref_is_never_flagged():
    text = _pod("", "env: [{name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}]")
    assert not any(f.rule.id == "ZT-K8S-014" for f in audit_manifests(parse_manifests(text)).findings)


def test_live_dump_folds_pods_into_their_owner():
    dump = """{"kind": "List", "apiVersion": "v1", "items": [
      {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web", "namespace": "a"},
       "spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}},
      {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": {"name": "web-1", "namespace": "a",
        "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]},
       "spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}},
      {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web-1-x", "namespace": "a",
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": true}]},
       "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}},
      {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "orphan", "namespace": "a",
        "ownerReferences": [{"kind": "ReplicaSet", "name": "gone", "controller": true}]},
       "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}
    ]}"""
    report = audit_manifests(parse_manifests(dump, source="dump.json"))
    host = sorted(str(f.resource) for f in report.findings if f.rule.id == "ZT-K8S-002")
    assert host == ["Deployment/a/web", "Pod/a/orphan"]


def test_namespace_filter(policy):
    report = audit_k8s([FIXTURES / "platform-bad"], policy=policy, namespace="scratch")
    assert {f.resource.namespace for f in report.findings if f.resource.kind != "Namespace"} == {"scratch"}
    assert {f.resource.name for f in report.findings if f.resource.kind == "Namespace"} == {"scratch"}


def test_system_namespaces_get_workload_checks_not_posture_or_policy_checks(policy):
    text = _pod("hostNetwork: true", "resources: {limits: {nvidia.com/gpu: 1}}").replace("team-a", "kube-system")
    ids = {f.rule.id for f in audit_manifests(parse_manifests(text), policy=policy, gpu_namespaces=()).findings}
    assert "ZT-K8S-002" in ids and not ids & {"ZT-K8S-001", "ZT-K8S-010", "ZT-K8S-016", "ZT-K8S-017"}
    same_in_tenant = text.replace("kube-system", "team-a")
    ids = {f.rule.id for f in audit_manifests(parse_manifests(same_in_tenant), policy=policy,
                                              gpu_namespaces=()).findings}
    assert {"ZT-K8S-001", "ZT-K8S-010", "ZT-K8S-016", "ZT-K8S-017"} <= ids


def test_exclude_namespaces(policy):
    report = audit_k8s([FIXTURES / "platform-bad"], policy=policy, exclude_namespaces=["scratch"])
    assert "scratch" not in {f.resource.namespace or f.resource.name for f in report.findings}
    assert any(f.resource.namespace == "team-b" for f in report.findings)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ztid.audit.k8s_secrets import _VALUE_PATTERNS, credential_reason  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["DB_PASSWORD", "HF_TOKEN", "API_KEY", "LOG_LEVEL", "X"]) | st.text(max_size=20),
       value=st.text(min_size=4, max_size=60) | st.from_regex(r"hf_[A-Za-z0-9]{34}", fullmatch=True)
       | st.from_regex(r"AKIA[0-9A-Z]{16}", fullmatch=True))
def test_credential_reason_never_echoes_the_value(name, value):
    reason = credential_reason(name, value)
    # a reason comes from a fixed vocabulary, so it cannot carry any part of the value
    vocabulary = {f"value looks like {what}" for what, _ in _VALUE_PATTERNS}
    vocabulary.add("name suggests a secret and it has a literal value")
    assert reason is None or reason in vocabulary
    if value.startswith(("hf_", "AKIA")) and reason is None:
        raise AssertionError(f"token shape not recognised: {value!r}")


def test_generate_name_only_objects_are_audited():
    text = "apiVersion: v1\nkind: Pod\nmetadata: {generateName: train-, namespace: a}\nspec: {hostIPC: true}\n"
    findings = audit_manifests(parse_manifests(text)).findings
    assert any(f.rule.id == "ZT-K8S-004" and f.resource.name == "train-*" for f in findings)


def test_internal_load_balancer_is_reported_as_internal():
    text = """apiVersion: v1
kind: Service
metadata:
  name: registry
  namespace: a
  annotations: {networking.gke.io/load-balancer-type: Internal}
spec: {type: LoadBalancer}
"""
    [f] = [f for f in audit_manifests(parse_manifests(text)).findings if f.rule.id == "ZT-K8S-015"]
    assert "internal load balancer" in f.message
