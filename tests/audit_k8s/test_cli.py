"""`ztid audit k8s|artifacts` through ztid.cli.main in-process, and once as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ztid.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
CHECKS = FIXTURES / "checks"
REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "policy.yaml")


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_default_and_exit_1_on_high(capsys):
    code, out, _ = run(capsys, "audit", "k8s", FIXTURES / "platform-bad", "--policy", POLICY)
    assert code == 1
    assert out.splitlines()[0].split() == ["SEVERITY", "ID", "RESOURCE", "MESSAGE"]
    assert "fail-on high: FAIL" in out.splitlines()[-1]


def test_clean_platform_exits_0(capsys):
    code, out, _ = run(capsys, "audit", "k8s", FIXTURES / "platform-good", "--policy", POLICY, "--fail-on", "info")
    assert code == 0 and out.strip() == "0 finding(s) (clean); fail-on info: ok"


@pytest.mark.parametrize("fail_on, expected", [("critical", 0), ("high", 0), ("medium", 1), ("low", 1), ("none", 0)])
def test_fail_on_threshold(capsys, tmp_path, fail_on, expected):
    # medium findings only: a root-capable pod in a system namespace (no namespace posture checks)
    path = tmp_path / "pod.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: kube-system}\n"
                    "spec: {containers: [{name: c, image: i}]}\n")
    doc = json.loads(run(capsys, "audit", "k8s", path, "--json")[1])
    assert {f["severity"] for f in doc["findings"]} == {"medium"}
    code, _, _ = run(capsys, "audit", "k8s", path, "--fail-on", fail_on)
    assert code == expected


def test_json_is_one_object_with_findings_and_summary(capsys):
    code, out, _ = run(capsys, "audit", "k8s", FIXTURES / "platform-bad", "--policy", POLICY, "--format", "json")
    doc = json.loads(out)  # exactly one object: json.loads fails on trailing data
    assert code == 1 and doc["ok"] is False and doc["audit"] == "k8s"
    assert doc["summary"]["total"] == len(doc["findings"]) > 0
    assert sum(doc["summary"]["by_severity"].values()) == doc["summary"]["total"]
    f = doc["findings"][0]
    assert set(f) >= {"id", "severity", "resource", "message", "remediation", "scanners", "location"}
    assert f["resource"]["kind"] and f["id"].startswith("ZT-K8S-")


def test_table_json_sarif_and_exit_code_agree(capsys, tmp_path):
    base = ["audit", "k8s", FIXTURES / "platform-bad", "--policy", POLICY, "--fail-on", "critical"]
    code_t, table, _ = run(capsys, *base)
    code_j, out, _ = run(capsys, *base, "--json")
    code_s, _, _ = run(capsys, *base, "--format", "sarif", "-o", tmp_path / "out.sarif")
    doc = json.loads(out)
    sarif = json.loads((tmp_path / "out.sarif").read_text())
    assert code_t == code_j == code_s == 1
    assert len(sarif["runs"][0]["results"]) == doc["summary"]["total"]
    assert table.splitlines()[-1].startswith(f"{doc['summary']['total']} finding(s)")
    assert doc["summary"]["failing"] == doc["summary"]["by_severity"]["critical"] == 3


@pytest.mark.parametrize("argv, fragment", [
    (["audit", "k8s"], "give manifest PATHS"),
    (["audit", "k8s", "missing.yaml"], "no such file"),
    (["audit", "k8s", "--fail-on", "severe", "x.yaml"], "invalid choice"),
    (["audit", "k8s", "x.yaml", "--json", "--format", "sarif"], "conflicts"),
    (["audit", "artifacts", "no-such-run"], "not a directory"),
])
def test_usage_and_unreadable_input_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and fragment in (out + err)


def test_malformed_manifest_exits_2_even_with_findings_elsewhere(capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: Pod\nmetadata: {name: [\n")
    code, out, err = run(capsys, "audit", "k8s", CHECKS / "zt-k8s-005.pos.yaml", tmp_path / "bad.yaml", "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False and "malformed YAML" in doc["message"] and "bad.yaml" in doc["message"]


def test_broken_policy_exits_2(capsys, tmp_path):
    (tmp_path / "policy.yaml").write_text("version: 1\ntrust_domain: x.example\ncomponents: {a: {allow: {b: [wrtie]}}}\n")
    code, _, err = run(capsys, "audit", "k8s", FIXTURES / "platform-good", "--policy", tmp_path / "policy.yaml")
    assert code == 2 and "policy.yaml" in err


def test_stdin(capsys, monkeypatch):
    import io

    data = (CHECKS / "zt-k8s-003.pos.yaml").read_bytes()
    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(data)})())
    code, out, _ = run(capsys, "audit", "k8s", "-", "--json")
    assert code == 1 and any(f["id"] == "ZT-K8S-003" for f in json.loads(out)["findings"])


def test_audit_without_subcommand_is_usage(capsys):
    assert run(capsys, "audit")[0] == 2


def test_subprocess_python_m_ztid(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ztid", "audit", "k8s", str(FIXTURES / "platform-bad"),
                           "--policy", POLICY, "--format", "sarif"], capture_output=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["version"] == "2.1.0" and doc["runs"][0]["results"]


def test_extension_points(capsys, monkeypatch, tmp_path):
    """A module ztid.cli._artifact_signatures plugs a signature verifier into `ztid audit artifacts`."""
    import importlib.util
    import types

    from ztid.audit.artifacts import SignatureVerdict

    hook = types.ModuleType("ztid.cli._artifact_signatures")
    seen = []
    hook.add_arguments = lambda parser: parser.add_argument("--trust-bundle")
    hook.verifier = lambda args: (lambda artifact, sig, *, entry, run_dir: (
        seen.append((artifact.name, sig, args.trust_bundle)) or SignatureVerdict(False, "untrusted signer")))
    monkeypatch.setitem(sys.modules, "ztid.cli._artifact_signatures", hook)
    (tmp_path / "w.bin").write_bytes(b"w")
    (tmp_path / "metadata.json").write_text(json.dumps({"output_artifacts": [
        {"path": "w.bin", "sha256": hashlib.sha256(b"w").hexdigest(), "signature": "w.sig"}]}))
    code, out, _ = run(capsys, "audit", "artifacts", tmp_path, "--trust-bundle", "b.pem", "--json")
    assert code == 1 and seen == [("w.bin", "w.sig", "b.pem")]  # w.sig does not exist: passed as recorded
    assert [f["id"] for f in json.loads(out)["findings"]] == ["ZT-ART-009"]
    # verify-log comes from ztid.cli._verify_log exactly when that module exists
    from ztid.cli import build_parser

    has_verify_log = importlib.util.find_spec("ztid.cli._verify_log") is not None
    audit = build_parser()._subparsers._group_actions[0].choices["audit"]
    assert ("verify-log" in audit._subparsers._group_actions[0].choices) is has_verify_log


def test_docs_cover_every_check():
    """docs/audit.md has a section per check, with the catalogue's severity and scanner names."""
    import re

    from ztid.audit.artifacts_rules import ARTIFACT_RULES
    from ztid.audit.k8s_rules import K8S_RULES

    text = (REPO / "docs" / "audit.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### (ZT-[A-Z0-9]+-\d{3}): [^\n]+\n\n(.+?)(?=\n### |\n## |\Z)", text, re.M | re.S))
    for rule in (*K8S_RULES, *ARTIFACT_RULES):
        body = sections.get(rule.id)
        assert body is not None, f"{rule.id} has no section in docs/audit.md"
        assert f"Severity **{rule.severity.label}**" in body
        assert "Why it matters for AI workloads" in body and "How to fix" in body and "What is detected" in body
        for name in rule.scanners.values():
            assert name in body


def test_unwritable_output_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "audit", "k8s", CHECKS / "zt-k8s-003.pos.yaml", "-o", tmp_path / "no" / "dir" / "x")
    assert code == 2 and "No such file" in err
