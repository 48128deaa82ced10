"""Checks on namespace-wide posture and standalone objects: NetworkPolicy, mTLS, AuthorizationPolicy,
Services, Secrets and ConfigMaps.

Istio semantics (research §D3): a PeerAuthentication without selector in the root namespace sets the
mesh-wide mode, one in a namespace overrides it, ``UNSET`` inherits, and with nothing set the proxies
accept plaintext (PERMISSIVE). Istio allows everything to a workload that no ALLOW policy selects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ztid.audit import k8s_rules as R
from ztid.audit.findings import Finding, Resource
from ztid.audit.k8s_inventory import Inventory, list_of, spec_of
from ztid.audit.k8s_load import Manifest
from ztid.audit.k8s_podspec import as_map
from ztid.audit.k8s_secrets import credential_reason

__all__ = ["NAMESPACE_CHECKS", "check_namespaces"]


def _ns_finding(rule: R.Rule, ns: str, inv: Inventory, message: str, subject: str = "") -> Finding:
    return Finding(rule, Resource("Namespace", None, ns), message, subject, inv.namespace_locations.get(ns))


def _obj_finding(rule: R.Rule, m: Manifest, message: str, subject: str = "") -> Finding:
    return Finding(rule, Resource(m.kind, m.namespace or "default", m.name), message, subject, m.location)


def _selects_all(m: Manifest, spec: Mapping[str, Any], key: str = "podSelector") -> bool:
    selector = as_map(spec.get(key), f"{m.location}: {m.kind}/{m.name}", f"spec.{key}")
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def _dns_only(m: Manifest, rules: list[Any]) -> bool:
    """True if every egress rule allows only port 53 (the usual 'allow DNS' beside a default deny)."""
    for i, rule in enumerate(rules):
        where = f"{m.location}: {m.kind}/{m.name}"
        rule = as_map(rule, where, f"spec.egress[{i}]")
        ports = list_of(m, rule.get("ports"), f"spec.egress[{i}].ports")
        if not ports or any(str(as_map(p, where, f"spec.egress[{i}].ports[]").get("port")) != "53" for p in ports):
            return False
    return True


def default_deny_directions(m: Manifest) -> set[str]:
    """Which directions (``Ingress``, ``Egress``) NetworkPolicy ``m`` denies for every pod of its namespace."""
    spec = spec_of(m)
    if not _selects_all(m, spec):
        return set()
    types = list_of(m, spec.get("policyTypes"), "spec.policyTypes")
    if not types:
        types = ["Ingress"] + (["Egress"] if "egress" in spec else [])
    out = set()
    if "Ingress" in types and not list_of(m, spec.get("ingress"), "spec.ingress"):
        out.add("Ingress")
    egress = list_of(m, spec.get("egress"), "spec.egress")
    if "Egress" in types and (not egress or _dns_only(m, egress)):
        out.add("Egress")
    return out


def check_default_deny(inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-001: namespaces without default-deny NetworkPolicies for Ingress and Egress."""
    covered: dict[str, set[str]] = {}
    for ns, policies in inv.network_policies.items():  # every policy is read, so a malformed one always fails
        for np in policies:
            covered.setdefault(ns, set()).update(default_deny_directions(np))
    for ns in inv.audited_namespaces():
        missing = [d for d in ("Ingress", "Egress") if d not in covered.get(ns, set())]
        if missing:
            yield _ns_finding(R.NO_DEFAULT_DENY, ns, inv,
                              f"no NetworkPolicy selecting all pods denies {' and '.join(missing)}")


def _mtls_mode(m: Manifest) -> tuple[str, bool]:
    spec = spec_of(m)
    mtls = as_map(spec.get("mtls"), f"{m.location}: {m.kind}/{m.name}", "spec.mtls")
    mode = str(mtls.get("mode") or "UNSET").upper()
    return mode, _selects_all(m, spec, "selector")


def check_strict_mtls(inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-010: effective mTLS not STRICT, workload and port overrides to PERMISSIVE/DISABLE."""
    mesh_mode, mesh_source = "PERMISSIVE", "Istio default"
    for pa in inv.peer_authentications.get(inv.istio_root, []):
        mode, whole = _mtls_mode(pa)
        if whole and mode != "UNSET":
            mesh_mode, mesh_source = mode, f"mesh-wide PeerAuthentication {inv.istio_root}/{pa.name}"
    for ns in inv.audited_namespaces():
        mode, source = mesh_mode, mesh_source
        for pa in inv.peer_authentications.get(ns, []):
            pa_mode, whole = _mtls_mode(pa)
            if whole and pa_mode != "UNSET":
                mode, source = pa_mode, f"PeerAuthentication {ns}/{pa.name}"
        if mode != "STRICT":
            yield _ns_finding(R.NOT_STRICT, ns, inv, f"effective mTLS mode {mode} ({source})")
        for pa in inv.peer_authentications.get(ns, []):
            pa_mode, whole = _mtls_mode(pa)
            if not whole and pa_mode in ("PERMISSIVE", "DISABLE"):
                yield _obj_finding(R.NOT_STRICT, pa, f"workload-level override to {pa_mode}", "mode")
            ports = as_map(spec_of(pa).get("portLevelMtls"), f"{pa.location}: {pa.name}", "spec.portLevelMtls")
            for port, setting in sorted(ports.items(), key=lambda kv: str(kv[0])):
                p_mode = str(as_map(setting, pa.name, f"portLevelMtls.{port}").get("mode") or "UNSET").upper()
                if p_mode in ("PERMISSIVE", "DISABLE"):
                    yield _obj_finding(R.NOT_STRICT, pa, f"port {port} overridden to {p_mode}", f"port/{port}")


def _is_baseline(m: Manifest) -> bool:
    spec = spec_of(m)
    if not _selects_all(m, spec, "selector"):
        return False
    action = str(spec.get("action") or "ALLOW").upper()
    rules = list_of(m, spec.get("rules"), "spec.rules")
    if action == "ALLOW":
        return not rules  # allow-nothing
    return action == "DENY" and any(r == {} for r in rules)  # deny-all


def check_authz_baseline(inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-011: namespaces without an allow-nothing (or deny-all) AuthorizationPolicy."""
    if any(_is_baseline(ap) for ap in inv.authorization_policies.get(inv.istio_root, [])):
        return
    for ns in inv.audited_namespaces():
        if not any(_is_baseline(ap) for ap in inv.authorization_policies.get(ns, [])):
            yield _ns_finding(R.NO_ALLOW_NOTHING, ns, inv,
                              "no allow-nothing AuthorizationPolicy: Istio allows requests no ALLOW policy covers")


_INTERNAL_LB = {  # cloud annotations that keep a LoadBalancer on the private network
    "networking.gke.io/load-balancer-type": "internal",
    "cloud.google.com/load-balancer-type": "internal",
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
    "service.beta.kubernetes.io/oci-load-balancer-internal": "true",
}


def _internal_lb(svc: Manifest) -> bool:
    annotations = as_map(svc.metadata.get("annotations"), f"{svc.location}: Service/{svc.name}", "metadata.annotations")
    return any(str(annotations.get(k, "")).lower() == v for k, v in _INTERNAL_LB.items())


def check_services(inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-015: LoadBalancer/NodePort Services and externalIPs."""
    for svc in inv.services:
        spec = spec_of(svc)
        kind = str(spec.get("type") or "ClusterIP")
        if kind in ("LoadBalancer", "NodePort"):
            ranges = list_of(svc, spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges")
            extra = f" (source ranges {', '.join(map(str, ranges))})" if ranges else ""
            if kind == "LoadBalancer" and _internal_lb(svc):
                extra += " (internal load balancer: not internet-facing, but still around the mesh)"
            yield _obj_finding(R.EXPOSED_SERVICE, svc, f"type {kind}{extra}", kind)
        if list_of(svc, spec.get("externalIPs"), "spec.externalIPs"):
            yield _obj_finding(R.EXPOSED_SERVICE, svc, "externalIPs set", "externalIPs")


def check_secrets(inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-012 (legacy token Secrets) and ZT-K8S-014 (credentials in ConfigMaps)."""
    for s in inv.secrets:
        if s.obj.get("type") == "kubernetes.io/service-account-token":
            annotations = as_map(s.metadata.get("annotations"), s.name, "metadata.annotations")
            sa = annotations.get("kubernetes.io/service-account.name", "?")
            yield _obj_finding(R.LEGACY_TOKEN, s, f"long-lived token Secret for service account {sa!r}")
    for cm in inv.config_maps:
        data = as_map(cm.obj.get("data"), f"{cm.location}: ConfigMap/{cm.name}", "data")
        for key, value in sorted(data.items()):
            reason = credential_reason(str(key), value)
            if reason:
                yield _obj_finding(R.ENV_SECRET, cm, f"data key {key}: {reason}; move it to a Secret", f"data/{key}")


NAMESPACE_CHECKS = (check_default_deny, check_strict_mtls, check_authz_baseline, check_services, check_secrets)


def check_namespaces(inv: Inventory) -> Iterator[Finding]:
    """Every namespace-wide and standalone-object finding.

    Raises:
        AuditError: a field the checks read has the wrong type.
    """
    for check in NAMESPACE_CHECKS:
        yield from check(inv)
