"""Render an audit Report as a SARIF 2.1.0 log (OASIS; the subset GitHub code scanning reads).

One run, tool ``ztid``, every rule of the audit's catalogue in ``tool.driver.rules`` (with GitHub's
``security-severity``), one result per finding with a stable ``ruleId``, a ``partialFingerprints``
entry (so re-uploads do not duplicate alerts), the manifest file and line when known, and the
Kubernetes resource as a logical location.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

from ztid.audit.findings import Finding, Report

__all__ = ["SARIF_SCHEMA", "SARIF_VERSION", "to_sarif"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def _version() -> str:
    try:
        return metadata.version("ztid")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _uri(path: str, base: Path) -> str | None:
    if path.startswith(("<", "kubectl ")):
        return None  # stdin or a live cluster: no file to point at
    p = Path(path)
    try:
        rel = p.resolve().relative_to(base.resolve()) if p.is_absolute() else p
    except ValueError:
        return p.resolve().as_uri()
    return rel.as_posix()


def _result(f: Finding, index: int, base: Path) -> dict[str, Any]:
    location: dict[str, Any] = {
        "logicalLocations": [{"fullyQualifiedName": str(f.resource), "name": f.resource.name, "kind": "resource"}],
    }
    uri = _uri(f.location.path, base) if f.location is not None else None
    if uri is not None and f.location is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
        if f.location.line:
            physical["region"] = {"startLine": f.location.line}
        location["physicalLocation"] = physical
    return {
        "ruleId": f.rule.id,
        "ruleIndex": index,
        "level": f.severity.sarif_level,
        "message": {"text": f"{f.resource}: {f.message}"},
        "locations": [location],
        "partialFingerprints": {"ztidFindingHash/v1": f.fingerprint},
        "properties": {"severity": f.severity.label, "resource": f.resource.to_dict(),
                       **({"subject": f.subject} if f.subject else {})},
    }


def to_sarif(report: Report, *, base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SARIF 2.1.0 log (as a JSON-ready dict) for ``report``.

    Args:
        report: the audit result.
        base_dir: file URIs are made relative to it (default: the current directory), as GitHub wants.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    rules = list(report.rules)
    index = {r.id: i for i, r in enumerate(rules)}
    driver_rules = []
    for r in rules:
        scanners = "; ".join(f"{k}: {v}" for k, v in sorted(r.scanners.items()))
        driver_rules.append({
            "id": r.id,
            "name": "".join(w.capitalize() for w in r.title.replace("-", " ").replace("/", " ").split()),
            "shortDescription": {"text": r.title},
            "fullDescription": {"text": r.why},
            "help": {"text": r.remediation + (f" (equivalent checks: {scanners})" if scanners else "")},
            "defaultConfiguration": {"level": r.severity.sarif_level},
            "properties": {"security-severity": r.severity.security_severity, "severity": r.severity.label,
                           "tags": ["security", f"ztid-{report.audit}"], "scanners": dict(sorted(r.scanners.items()))},
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "ztid", "version": _version(), "rules": driver_rules}},
            "automationDetails": {"id": f"ztid/audit/{report.audit}/"},
            "columnKind": "unicodeCodePoints",
            "results": [_result(f, index[f.rule.id], base) for f in report.findings],
            "properties": {"summary": report.counts(), "notes": list(report.notes)},
        }],
    }
