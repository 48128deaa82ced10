"""The sidecar's per-Check metrics: plain counters exposed as Prometheus counter and histogram families."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ztid.sidecar.metrics import SidecarMetrics


def _samples(metrics: SidecarMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_checks_are_counted_by_decision_and_reason_code_with_a_cumulative_histogram() -> None:
    m = SidecarMetrics()
    for _ in range(3):
        m.observe(True, "allowed", False, 0.00004)
    m.observe(True, "allowed", True, 0.0001)  # exactly on a bucket bound: counted in that bucket (le)
    m.observe(False, "denied", False, 0.0003)
    m.observe(False, "audit_log_failed", False, 0.7)  # beyond the largest bound: +Inf only
    s = _samples(m)
    assert s[("ztid_authz_decisions_total", (("decision", "allow"), ("reason_code", "allowed")))] == 4
    assert s[("ztid_authz_decisions_total", (("decision", "deny"), ("reason_code", "denied")))] == 1
    assert s[("ztid_authz_would_deny_total", (("reason_code", "allowed"),))] == 1
    assert s[("ztid_decision_log_failures_total", ())] == 1
    bucket = lambda le: s[("ztid_authz_check_duration_seconds_bucket", (("le", le),))]  # noqa: E731
    assert (bucket("0.0001"), bucket("0.00025"), bucket("0.0005"), bucket("0.25"), bucket("+Inf")) == (4, 4, 5, 5, 6)
    assert s[("ztid_authz_check_duration_seconds_count", ())] == 6
    assert abs(s[("ztid_authz_check_duration_seconds_sum", ())] - (3 * 0.00004 + 0.0001 + 0.0003 + 0.7)) < 1e-9
    assert m.checks.count(True, "allowed") == 4 and m.checks.count(False, "denied") == 1

