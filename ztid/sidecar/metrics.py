"""The sidecar's Prometheus metrics (own registry; bounded labels only, never a SPIFFE ID or a path).

=======================================================  ==========================================
``ztid_authz_decisions_total{decision,reason_code}``     counter; decision = allow | deny
``ztid_authz_would_deny_total{reason_code}``             counter; audit-mode allows that enforce would deny
``ztid_authz_check_duration_seconds``                    histogram of Check handling time
``ztid_policy_reloads_total{result}``                    counter; result = success | failure
``ztid_policy_info{digest}``                             gauge 1 for the policy in force
``ztid_policy_loaded``                                   gauge 1 once a policy and bundles are loaded
``ztid_svid_expiry_timestamp_seconds``                   gauge; the sidecar's own SVID notAfter
``ztid_decision_log_failures_total``                     counter; checks denied because the log failed
``ztid_build_info{version}``                             gauge 1
=======================================================  ==========================================
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["SidecarMetrics"]

_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class _CheckStats:
    """The per-Check metrics as plain counters, turned into metric families only when scraped.

    prometheus_client's Counter and Histogram take a lock and several calls per update (about
    2 us a Check here); Checks are counted on the event loop thread only, so plain ints suffice,
    and a scrape from the HTTP thread reads them under the GIL (it may see a Check in one family
    and not yet in the next, which rates over scrapes do not notice).
    """

    def __init__(self) -> None:
        self.decisions: dict[tuple[bool, str, bool], int] = {}
        self.buckets = [0] * (len(_BUCKETS) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.seconds = 0.0
        self.created = time.time()

    def observe(self, allowed: bool, code: str, would_deny: bool, seconds: float) -> None:
        key = (allowed, code, would_deny)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        self.buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        decisions = dict(self.decisions)
        by_label: dict[tuple[str, str], int] = {}
        by_would: dict[str, int] = {}
        for (allowed, code, would_deny), n in decisions.items():
            label = ("allow" if allowed else "deny", code)
            by_label[label] = by_label.get(label, 0) + n
            if would_deny:
                by_would[code] = by_would.get(code, 0) + n
        total = CounterMetricFamily("ztid_authz_decisions", "Authorization decisions answered.",
                                    labels=["decision", "reason_code"])
        for label, n in sorted(by_label.items()):
            total.add_metric(list(label), n, created=self.created)
        would = CounterMetricFamily("ztid_authz_would_deny", "Audit-mode allows that enforce mode would deny.",
                                    labels=["reason_code"])
        for code, n in sorted(by_would.items()):
            would.add_metric([code], n, created=self.created)
        failures = CounterMetricFamily("ztid_decision_log_failures", "Checks denied because the decision log failed.",
                                       labels=[])
        failures.add_metric([], sum(n for (_, code, _), n in decisions.items() if code == "audit_log_failed"),
                            created=self.created)
        cumulative, buckets = 0, []
        for bound, n in zip((*_BUCKETS, float("inf")), list(self.buckets)):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration = HistogramMetricFamily("ztid_authz_check_duration_seconds", "Time to answer one Check.", labels=[])
        duration.add_metric([], buckets, sum_value=self.seconds)
        yield from (total, would, failures, duration)

    def count(self, allowed: bool, code: str) -> int:
        """Checks answered so far with this decision and reason code."""
        return sum(n for (a, c, _), n in dict(self.decisions).items() if a == allowed and c == code)


class SidecarMetrics:
    """The metric objects; the per-Check ones are plain counters (:class:`_CheckStats`) collected when scraped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.checks = _CheckStats()
        r.register(self.checks)  # type: ignore[arg-type]  # a custom collector: anything with collect()
        self.reloads = Counter("ztid_policy_reloads", "Policy reload attempts.", ["result"], registry=r)
        self.policy_info = Gauge("ztid_policy_info", "The policy in force (by sha256).", ["digest"], registry=r)
        self.loaded = Gauge("ztid_policy_loaded", "1 once a policy and trust bundles are loaded.", registry=r)
        self.svid_expiry = Gauge("ztid_svid_expiry_timestamp_seconds", "notAfter of the sidecar's own SVID.",
                                 registry=r)
        build = Gauge("ztid_build_info", "ztid build.", ["version"], registry=r)
        build.labels(version=_version()).set(1)
        self.reloads.labels(result="success")
        self.reloads.labels(result="failure")
        self.observe = self.checks.observe  # count one answered Check: a bound method, no wrapper on the hot path
        self._digest: str | None = None
        self._lock = threading.Lock()
        self._http: Any = None

    def policy(self, digest: str) -> None:
        """Mark ``digest`` as the policy in force."""
        with self._lock:
            if self._digest is not None and self._digest != digest:
                self.policy_info.remove(self._digest)
            self.policy_info.labels(digest=digest).set(1)
            self._digest = digest

    def serve(self, address: str) -> int:
        """Serve ``/metrics`` on ``HOST:PORT`` (port 0 picks one); return the bound port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def text(self) -> str:
        """The current exposition text (what /metrics serves)."""
        return generate_latest(self.registry).decode()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ztid")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return "unknown"
