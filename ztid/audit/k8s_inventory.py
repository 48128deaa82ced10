"""Sort loaded Kubernetes objects into what the checks look up: namespaces, workloads, policies, accounts.

Objects whose controlling owner is also in the input (a Pod of a ReplicaSet of a Deployment, as
``kubectl get -o json`` dumps of a live cluster contain) are folded into that owner, so one
misconfigured Deployment yields one finding, not one per replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ztid.audit.findings import Location, Resource
from ztid.audit.k8s_load import Manifest
from ztid.audit.k8s_podspec import Workload, as_list, as_map, workloads

__all__ = ["Inventory", "SYSTEM_NAMESPACES", "build_inventory"]

# Platform namespaces: their workloads get the pod checks, but not the namespace-posture checks nor
# the policy checks (they are not tenants of policy.yaml).
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "istio-system", "spire",
                               "spire-system", "cert-manager", "gatekeeper-system", "local-path-storage",
                               "gpu-operator", "nvidia-gpu-operator", "nvidia-network-operator",
                               "network-operator"})
ISTIO_ROOT_NAMESPACE = "istio-system"


@dataclass
class Inventory:
    """Everything the checks look up, keyed by namespace where that applies."""

    namespace_labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    namespace_locations: dict[str, Location] = field(default_factory=dict)
    workloads: list[Workload] = field(default_factory=list)
    network_policies: dict[str, list[Manifest]] = field(default_factory=dict)
    peer_authentications: dict[str, list[Manifest]] = field(default_factory=dict)
    authorization_policies: dict[str, list[Manifest]] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    services: list[Manifest] = field(default_factory=list)
    secrets: list[Manifest] = field(default_factory=list)
    config_maps: list[Manifest] = field(default_factory=list)
    istio_root: str = ISTIO_ROOT_NAMESPACE

    def namespaces(self) -> list[str]:
        """Every namespace that holds a workload, or is declared, sorted."""
        names = set(self.namespace_labels) | {w.namespace for w in self.workloads}
        return sorted(names)

    def audited_namespaces(self) -> list[str]:
        """The namespaces whose namespace-wide posture is checked (system namespaces left out)."""
        return [n for n in self.namespaces() if n not in SYSTEM_NAMESPACES]

    def resource_of(self, m: Manifest) -> Resource:
        return Resource(m.kind, (m.namespace or "default") if m.kind != "Namespace" else None, m.name)


def _controller(m: Manifest) -> tuple[str, str, str] | None:
    refs = m.metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return (str(ref.get("kind", "")), m.namespace or "default", str(ref.get("name", "")))
    return None


def _labels(m: Manifest) -> dict[str, str]:
    raw = as_map(m.metadata.get("labels"), f"{m.location}: {m.kind}/{m.name}", "metadata.labels")
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def build_inventory(manifests: Iterable[Manifest], *, namespace: str | None = None,
                    exclude: Iterable[str] = ()) -> Inventory:
    """Index ``manifests``; with ``namespace``, keep only that namespace's objects; drop ``exclude``'s.

    Raises:
        AuditError: an object the checks read has a field of the wrong type.
    """
    items = list(manifests)
    present = {(m.kind, m.namespace or "default", m.name) for m in items}
    inv = Inventory()
    skip = frozenset(exclude)
    for m in items:
        ns = m.namespace or "default"
        if (m.name if m.kind == "Namespace" else ns) in skip:
            continue
        if m.kind != "Namespace":  # a namespace's findings point at its first object until its own is seen
            inv.namespace_locations.setdefault(ns, m.location)
        if m.kind == "Namespace":
            if namespace is None or m.name == namespace:
                inv.namespace_labels[m.name] = _labels(m)
                inv.namespace_locations[m.name] = m.location
            continue
        if namespace is not None and ns != namespace and not (
                ns == inv.istio_root and m.kind in ("PeerAuthentication", "AuthorizationPolicy")):
            continue
        owner = _controller(m)
        if owner is not None and owner in present:
            continue
        if m.kind == "NetworkPolicy":
            inv.network_policies.setdefault(ns, []).append(m)
        elif m.kind == "PeerAuthentication":
            inv.peer_authentications.setdefault(ns, []).append(m)
        elif m.kind == "AuthorizationPolicy":
            inv.authorization_policies.setdefault(ns, []).append(m)
        elif m.kind == "ServiceAccount":
            inv.service_accounts[(ns, m.name)] = m
        elif m.kind == "Service":
            inv.services.append(m)
        elif m.kind == "Secret":
            inv.secrets.append(m)
        elif m.kind == "ConfigMap":
            inv.config_maps.append(m)
        else:
            inv.workloads.extend(workloads(m))
    return inv


def spec_of(m: Manifest) -> Mapping[str, Any]:
    """``m.spec`` as a mapping (AuditError if it is not one)."""
    return as_map(m.obj.get("spec"), f"{m.location}: {m.kind}/{m.name}", "spec")


def list_of(m: Manifest, value: object, field_name: str) -> list[Any]:
    """``value`` (a field of ``m``) as a list (AuditError if it is not one)."""
    return as_list(value, f"{m.location}: {m.kind}/{m.name}", field_name)
