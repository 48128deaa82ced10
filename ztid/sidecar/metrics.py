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

import threading
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

__all__ = ["SidecarMetrics"]

_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class SidecarMetrics:
    """The metric objects, with label children cached so a Check pays one dict lookup."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter("ztid_authz_decisions", "Authorization decisions answered.",
                                 ["decision", "reason_code"], registry=r)
        self.would_deny = Counter("ztid_authz_would_deny", "Audit-mode allows that enforce mode would deny.",
                                  ["reason_code"], registry=r)
        self.duration = Histogram("ztid_authz_check_duration_seconds", "Time to answer one Check.",
                                  buckets=_BUCKETS, registry=r)
        self.reloads = Counter("ztid_policy_reloads", "Policy reload attempts.", ["result"], registry=r)
        self.policy_info = Gauge("ztid_policy_info", "The policy in force (by sha256).", ["digest"], registry=r)
        self.loaded = Gauge("ztid_policy_loaded", "1 once a policy and trust bundles are loaded.", registry=r)
        self.svid_expiry = Gauge("ztid_svid_expiry_timestamp_seconds", "notAfter of the sidecar's own SVID.",
                                 registry=r)
        self.log_failures = Counter("ztid_decision_log_failures", "Checks denied because the decision log failed.",
                                    registry=r)
        build = Gauge("ztid_build_info", "ztid build.", ["version"], registry=r)
        build.labels(version=_version()).set(1)
        self.reloads.labels(result="success")
        self.reloads.labels(result="failure")
        self._children: dict[tuple[bool, str, bool], Any] = {}
        self._digest: str | None = None
        self._lock = threading.Lock()
        self._http: Any = None

    def observe(self, allowed: bool, code: str, would_deny: bool, seconds: float) -> None:
        """Count one answered Check."""
        key = (allowed, code, would_deny)
        child = self._children.get(key)
        if child is None:
            child = self.decisions.labels(decision="allow" if allowed else "deny", reason_code=code)
            self._children[key] = child
        child.inc()
        if would_deny:
            self.would_deny.labels(reason_code=code).inc()
        if code == "audit_log_failed":
            self.log_failures.inc()
        self.duration.observe(seconds)

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
