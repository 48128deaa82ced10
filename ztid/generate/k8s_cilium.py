"""Render the allow matrix as CiliumNetworkPolicies (cilium.io/v2).

Per namespace one ``ztid-default-deny`` (every endpoint; an empty rule switches on default deny for
both directions without allowing anything) with DNS to kube-dns through Cilium's DNS proxy, then per
component one policy allowing the permitted callers in and the permitted callees out. Cilium, like
NetworkPolicy, works at L3/L4 here: actions are not expressed.
"""

from __future__ import annotations

from typing import Any

from ztid.generate.k8s_netpol import DEFAULT_LABEL, meta
from ztid.generate.matrix import Endpoint, Matrix

__all__ = ["cilium_policies"]

NS_KEY = "k8s:io.kubernetes.pod.namespace"


def _selector(ep: Endpoint, label: str) -> dict[str, Any]:
    return {"matchLabels": {label: ep.component, NS_KEY: ep.namespace}}


def cilium_policies(matrix: Matrix, *, label: str = DEFAULT_LABEL) -> list[dict[str, Any]]:
    """The CiliumNetworkPolicies for every namespace of ``matrix``."""
    out: list[dict[str, Any]] = []
    for ns in matrix.namespaces:
        out.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                    "metadata": meta("ztid-default-deny", ns, matrix),
                    "spec": {"endpointSelector": {}, "ingress": [{}],
                             "egress": [{"toEndpoints": [{"matchLabels": {NS_KEY: "kube-system",
                                                                          "k8s-app": "kube-dns"}}],
                                         "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                                                      "rules": {"dns": [{"matchPattern": "*"}]}}]}]}})
        for ep in (e for e in matrix.endpoints if e.namespace == ns):
            callers = [p.source for p in matrix.callers(ep)]
            callees = [p.target for p in matrix.callees(ep)]
            if not callers and not callees:
                continue
            spec: dict[str, Any] = {"endpointSelector": {"matchLabels": {label: ep.component}}}
            if callers:
                spec["ingress"] = [{"fromEndpoints": [_selector(c, label) for c in callers]}]
            if callees:
                spec["egress"] = [{"toEndpoints": [_selector(c, label) for c in callees]}]
            out.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                        "metadata": meta(f"ztid-{ep.component}", ns, matrix), "spec": spec})
    return out
