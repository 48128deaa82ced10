"""The Kubernetes zero-trust audit: read manifests (or a live cluster), run every check, return a Report.

::

    from ztid.audit.k8s import audit_k8s
    report = audit_k8s(["deploy/"], policy=load_policy("policy.yaml"))
    report.at_or_above(Severity.HIGH)

Check IDs, severities and the matching kube-linter / kubescape / Polaris checks are in
:mod:`ztid.audit.k8s_rules` and docs/audit.md. Without a policy the two policy checks
(ZT-K8S-016, ZT-K8S-017) are skipped and the report says so in its notes.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable

from ztid.audit.findings import Finding, Report, Severity
from ztid.audit.k8s_checks_ns import check_namespaces
from ztid.audit.k8s_checks_pod import check_workload
from ztid.audit.k8s_inventory import Inventory, build_inventory
from ztid.audit.k8s_load import Manifest, load_live, load_paths, parse_manifests
from ztid.audit.k8s_rules import K8S_RULES, RULES_BY_ID
from ztid.policy import Policy

__all__ = ["K8S_RULES", "RULES_BY_ID", "Severity", "audit_k8s", "audit_manifests", "parse_manifests"]


def _findings(inv: Inventory, policy: Policy | None, gpu_namespaces: Collection[str] | None) -> Iterable[Finding]:
    for w in inv.workloads:
        yield from check_workload(w, inv)
    yield from check_namespaces(inv)
    if policy is not None:
        from ztid.audit.k8s_checks_policy import check_policy

        yield from check_policy(inv, policy, gpu_namespaces=gpu_namespaces)


def audit_manifests(manifests: Iterable[Manifest], *, policy: Policy | None = None, namespace: str | None = None,
                    exclude_namespaces: Iterable[str] = (), gpu_namespaces: Collection[str] | None = None,
                    inputs: Iterable[str] = (), notes: Iterable[str] = ()) -> Report:
    """Audit already-loaded objects.

    Args:
        manifests: the objects (see :mod:`ztid.audit.k8s_load`).
        policy: enables the policy checks ZT-K8S-016 and ZT-K8S-017.
        namespace: audit only this namespace (plus the Istio root namespace's mesh-wide policies).
        exclude_namespaces: leave these namespaces out entirely.
        gpu_namespaces: if given, GPUs are allowed only in these namespaces (ZT-K8S-017).
        inputs: what was read, for the report.
        notes: what could not be looked at, for the report.

    Raises:
        AuditError: an object the checks read is malformed.
    """
    inv = build_inventory(manifests, namespace=namespace, exclude=exclude_namespaces)
    notes = list(notes)
    if policy is None:
        notes.append("no --policy given: ZT-K8S-016 and ZT-K8S-017 were not checked")
    return Report.build("k8s", _findings(inv, policy, gpu_namespaces), K8S_RULES, inputs=inputs, notes=notes)


def audit_k8s(paths: Iterable[str | os.PathLike[str]] = (), *, live: bool = False, policy: Policy | None = None,
              namespace: str | None = None, exclude_namespaces: Iterable[str] = (),
              gpu_namespaces: Collection[str] | None = None, kubectl: str = "kubectl",
              context: str | None = None) -> Report:
    """Audit manifest files/directories, and with ``live=True`` the cluster ``kubectl`` points at.

    Raises:
        AuditError: unreadable or malformed input, or kubectl failing on the core kinds.
    """
    paths = [str(p) for p in paths]
    manifests = load_paths(paths)
    notes: list[str] = []
    inputs = list(paths)
    if live:
        live_manifests, notes = load_live(kubectl=kubectl, context=context, namespace=namespace)
        manifests.extend(live_manifests)
        inputs.append(f"kubectl{' --context ' + context if context else ''}")
    return audit_manifests(manifests, policy=policy, namespace=namespace, exclude_namespaces=exclude_namespaces,
                           gpu_namespaces=gpu_namespaces, inputs=inputs, notes=notes)
