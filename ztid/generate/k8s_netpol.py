"""Render the allow matrix as Kubernetes NetworkPolicies (networking.k8s.io/v1).

Per namespace: ``ztid-default-deny`` (every pod, Ingress and Egress, no rules), ``ztid-allow-dns``
(egress to kube-dns on 53/UDP and 53/TCP), optionally ``ztid-allow-istiod`` (sidecars reach the
control plane), then for each component one ingress policy listing the components that may call it
and one egress policy listing the components it may call. Peers are selected by the component label;
peers in another namespace add a ``namespaceSelector`` on ``kubernetes.io/metadata.name``.

NetworkPolicy is L3/L4: it cannot tell ``read`` from ``write``, so a pair is open when any action
is allowed, on every port (the policy names no ports). Actions are enforced by ztid's sidecar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ztid.generate.matrix import Endpoint, Matrix

__all__ = ["DEFAULT_LABEL", "network_policies"]

DEFAULT_LABEL = "app.kubernetes.io/component"
NS_LABEL = "kubernetes.io/metadata.name"


def meta(name: str, namespace: str, matrix: Matrix, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Metadata every generated object carries: managed-by label and the policy digest."""
    annotations = {"ztid.io/policy-digest": matrix.policy.digest, **(extra or {})}
    return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "ztid"},
            "annotations": annotations}


def _peer(ep: Endpoint, here: str, label: str) -> dict[str, Any]:
    peer: dict[str, Any] = {"podSelector": {"matchLabels": {label: ep.component}}}
    if ep.namespace != here:
        peer["namespaceSelector"] = {"matchLabels": {NS_LABEL: ep.namespace}}
    return peer


def _np(name: str, ns: str, matrix: Matrix, spec: dict[str, Any], about: str = "") -> dict[str, Any]:
    extra = {"ztid.io/allows": about} if about else None
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(name, ns, matrix, extra),
            "spec": spec}


def network_policies(matrix: Matrix, *, label: str = DEFAULT_LABEL, dns: bool = True,
                     istiod: bool = False) -> list[dict[str, Any]]:
    """The NetworkPolicies for every namespace of ``matrix``."""
    out: list[dict[str, Any]] = []
    for ns in matrix.namespaces:
        out.append(_np("ztid-default-deny", ns, matrix, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        if dns:
            out.append(_np("ztid-allow-dns", ns, matrix, {
                "podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "kube-system"}},
                                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}))
        if istiod:
            out.append(_np("ztid-allow-istiod", ns, matrix, {
                "podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "istio-system"}},
                                    "podSelector": {"matchLabels": {"app": "istiod"}}}],
                            "ports": [{"protocol": "TCP", "port": 15012}]}]}))
        for ep in (e for e in matrix.endpoints if e.namespace == ns):
            callers = matrix.callers(ep)
            callees = matrix.callees(ep)
            if callers:
                about = ", ".join(f"{p.source.namespace}/{p.source.component}: {'+'.join(p.actions)}" for p in callers)
                out.append(_np(f"ztid-ingress-{ep.component}", ns, matrix, {
                    "podSelector": {"matchLabels": {label: ep.component}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [_peer(p.source, ns, label) for p in callers]}]}, about))
            if callees:
                about = ", ".join(f"{p.target.namespace}/{p.target.component}: {'+'.join(p.actions)}" for p in callees)
                out.append(_np(f"ztid-egress-{ep.component}", ns, matrix, {
                    "podSelector": {"matchLabels": {label: ep.component}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [_peer(p.target, ns, label) for p in callees]}]}, about))
    return out
