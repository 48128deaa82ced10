"""Render the allow matrix as Istio security policy (security.istio.io/v1).

Per namespace: a STRICT ``PeerAuthentication``, an ``allow-nothing`` AuthorizationPolicy (Istio
allows everything to a workload no ALLOW policy selects), and per component an ALLOW policy whose
``source.principals`` are the identity templates filled in for each permitted caller:
``spiffe://td/ns/{tenant}/sa/{component}`` becomes ``td/ns/<namespace>/sa/<component>``, and a
trailing ``{workload...}`` becomes a ``*`` suffix (Istio's prefix match).

Not expressible here, and left to ztid's ext_authz sidecar (optionally wired in with a CUSTOM
policy naming an extension provider): the policy's actions (``read``/``write`` are not HTTP methods,
and gRPC uses POST for everything), a ``{workload}`` capture inside the path (Istio allows ``*`` only
as a prefix or suffix), and first-match-wins between templates (a principal is emitted only when
its template is the one that maps such IDs, but Istio itself does not order them).
"""

from __future__ import annotations

from typing import Any

from ztid.generate.k8s_netpol import DEFAULT_LABEL, meta
from ztid.generate.matrix import Matrix, principals_for

__all__ = ["istio_policies"]

API = "security.istio.io/v1"


def istio_policies(matrix: Matrix, *, label: str = DEFAULT_LABEL,
                   ext_authz_provider: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The Istio objects for every namespace of ``matrix``, and notes on what could not be expressed."""
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for ns in matrix.namespaces:
        out.append({"apiVersion": API, "kind": "PeerAuthentication", "metadata": meta("ztid-strict", ns, matrix),
                    "spec": {"mtls": {"mode": "STRICT"}}})
        out.append({"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": meta("ztid-allow-nothing", ns, matrix),
                    "spec": {}})
        if ext_authz_provider:
            out.append({"apiVersion": API, "kind": "AuthorizationPolicy",
                        "metadata": meta("ztid-ext-authz", ns, matrix),
                        "spec": {"action": "CUSTOM", "provider": {"name": ext_authz_provider}, "rules": [{}]}})
        for ep in (e for e in matrix.endpoints if e.namespace == ns):
            principals: dict[str, str] = {}
            for p in matrix.callers(ep):
                found, why = principals_for(matrix.policy, p.source, ep)
                notes.extend(why)
                for pr in found:
                    principals.setdefault(pr.text, "+".join(p.actions))
            # A template without {tenant} (e.g. /{component}/{workload...}) may add callers from no namespace.
            if not principals:
                continue
            about = ", ".join(f"{k}: {v}" for k, v in sorted(principals.items()))
            out.append({"apiVersion": API, "kind": "AuthorizationPolicy",
                        "metadata": meta(f"ztid-allow-{ep.component}", ns, matrix, {"ztid.io/allows": about}),
                        "spec": {"selector": {"matchLabels": {label: ep.component}}, "action": "ALLOW",
                                 "rules": [{"from": [{"source": {"principals": sorted(principals)}}]}]}})
    return out, sorted(set(notes))
