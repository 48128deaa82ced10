"""Audit findings: severities, the rule catalogue entry, one finding, and the report they form.

Every audit (``ztid audit k8s``, ``ztid audit artifacts``) returns one :class:`Report`. The table,
the JSON object, the SARIF log and the exit code are all derived from that one value, so they
cannot disagree (research §E5: a console that says "all passed" beside a SARIF log with findings).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ztid.errors import UsageError

__all__ = ["Finding", "Location", "Report", "Resource", "Rule", "Severity"]


class Severity(enum.IntEnum):
    """How bad a finding is; ordered, so ``Severity.HIGH >= Severity.MEDIUM``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> "Severity":
        """Parse ``critical|high|medium|low|info`` (any case).

        Raises:
            UsageError: any other word.
        """
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            names = "|".join(s.label for s in sorted(cls, reverse=True))
            raise UsageError(f"unknown severity {text!r} (expected {names})") from None

    @property
    def label(self) -> str:
        """The lowercase name used in every output."""
        return self.name.lower()

    @property
    def sarif_level(self) -> str:
        """SARIF ``result.level``: error for critical/high, warning for medium, note below."""
        return "error" if self >= Severity.HIGH else "warning" if self == Severity.MEDIUM else "note"

    @property
    def security_severity(self) -> str:
        """GitHub code scanning's numeric ``security-severity`` bucket for this level."""
        return {4: "9.5", 3: "8.0", 2: "5.5", 1: "3.0", 0: "0.0"}[int(self)]


@dataclass(frozen=True)
class Rule:
    """One check of the catalogue: a stable ID and everything a reader needs to act on it.

    ``scanners`` maps a scanner name (``kube-linter``, ``kubescape``, ``polaris``) to the name of
    its equivalent check, for comparison runs (research §E4).
    """

    id: str
    title: str
    severity: Severity
    why: str
    remediation: str
    scanners: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.label,
            "why": self.why,
            "remediation": self.remediation,
            "scanners": dict(sorted(self.scanners.items())),
        }


@dataclass(frozen=True, order=True)
class Resource:
    """What a finding is about: ``kind/namespace/name`` (namespace ``None`` for cluster scope or files)."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


@dataclass(frozen=True, order=True)
class Location:
    """Where the resource was read from: a path (as given) and a 1-based line when known."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, on which resource, what exactly (``subject`` e.g. a container), where."""

    rule: Rule
    resource: Resource
    message: str
    subject: str = ""
    location: Location | None = None

    @property
    def severity(self) -> Severity:
        """The rule's severity (fixed per rule, so a rule ID means one severity)."""
        return self.rule.severity

    @property
    def fingerprint(self) -> str:
        """A stable hash of rule, resource and subject (not the message, not the file line)."""
        key = "\x1f".join((self.rule.id, self.resource.kind, self.resource.namespace or "", self.resource.name, self.subject))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def sort_key(self) -> tuple[Any, ...]:
        return (-int(self.severity), self.rule.id, self.resource, self.subject, self.message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of one entry of ``findings`` in ``--format json``)."""
        return {
            "id": self.rule.id,
            "severity": self.severity.label,
            "title": self.rule.title,
            "resource": self.resource.to_dict(),
            "subject": self.subject or None,
            "message": self.message,
            "remediation": self.rule.remediation,
            "scanners": dict(sorted(self.rule.scanners.items())),
            "location": None if self.location is None else {"path": self.location.path, "line": self.location.line},
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Report:
    """The result of one audit: sorted, de-duplicated findings and the catalogue they came from."""

    audit: str  # "k8s" or "artifacts"
    findings: tuple[Finding, ...]
    rules: tuple[Rule, ...]
    inputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the audit could not look at (e.g. a CRD absent from the cluster)

    @classmethod
    def build(cls, audit: str, findings: Iterable[Finding], rules: Iterable[Rule], *,
              inputs: Iterable[str] = (), notes: Iterable[str] = ()) -> "Report":
        """Sort and de-duplicate (by fingerprint) ``findings`` into a report."""
        seen: dict[str, Finding] = {}
        for f in findings:
            seen.setdefault(f.fingerprint, f)
        ordered = tuple(sorted(seen.values(), key=Finding.sort_key))
        return cls(audit, ordered, tuple(sorted(rules, key=lambda r: r.id)), tuple(inputs), tuple(notes))

    def at_or_above(self, threshold: Severity | None) -> tuple[Finding, ...]:
        """The findings whose severity is ``threshold`` or worse (none when ``threshold`` is None)."""
        if threshold is None:
            return ()
        return tuple(f for f in self.findings if f.severity >= threshold)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity label, every label present."""
        out = {s.label: 0 for s in sorted(Severity, reverse=True)}
        for f in self.findings:
            out[f.severity.label] += 1
        return out

    def to_dict(self, *, fail_on: Severity | None = Severity.HIGH) -> dict[str, Any]:
        """The single JSON object of ``--format json``: ``findings`` plus ``summary``."""
        failing = self.at_or_above(fail_on)
        return {
            "audit": self.audit,
            "ok": not failing,
            "findings": [f.to_dict() for f in self.findings],
            "summary": {
                "total": len(self.findings),
                "by_severity": self.counts(),
                "fail_on": fail_on.label if fail_on is not None else "none",
                "failing": len(failing),
                "inputs": list(self.inputs),
                "notes": list(self.notes),
            },
        }

    def render_table(self, *, fail_on: Severity | None = Severity.HIGH) -> str:
        """A fixed-width table, one finding a row, then a summary line."""
        header = ("SEVERITY", "ID", "RESOURCE", "MESSAGE")
        rows = [(f.severity.label, f.rule.id, str(f.resource), f.message) for f in self.findings]
        widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(3)]
        lines = []
        if rows:
            lines.append("  ".join(h.ljust(w) for h, w in zip(header[:3], widths)) + "  " + header[3])
            lines.extend("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows)
            lines.append("")
        counts = ", ".join(f"{n} {label}" for label, n in self.counts().items() if n)
        failing = len(self.at_or_above(fail_on))
        verdict = "clean" if not self.findings else counts
        gate = "none" if fail_on is None else fail_on.label
        status = "FAIL" if failing else "ok"
        lines.append(f"{len(self.findings)} finding(s) ({verdict}); fail-on {gate}: {status}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)
