"""ztid-specific checks: does each workload's identity, and each GPU request, fit policy.yaml?

A Kubernetes service account maps to ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``,
the SPIRE Kubernetes default. The policy's identity templates then say which component (and tenant)
that is. A namespace "hosts" the policy when some declared component can have an identity there:
its service account named for the component (``.../ns/{tenant}/sa/{component}``), or any account
when the template captures the component from the namespace (``.../ns/{component}/sa/{workload}``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from ztid.audit import k8s_rules as R
from ztid.audit.findings import Finding
from ztid.audit.k8s_inventory import SYSTEM_NAMESPACES, Inventory
from ztid.audit.k8s_podspec import Workload, as_map
from ztid.errors import IdentityError
from ztid.policy import Policy
from ztid.spiffeid import SpiffeId

__all__ = ["GPU_RESOURCES", "check_policy", "namespace_hosts_policy", "workload_spiffe_id"]

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe", "habana.ai/gaudi")
GPU_PREFIXES = ("nvidia.com/mig-",)  # MIG slices, e.g. nvidia.com/mig-1g.5gb


def workload_spiffe_id(policy: Policy, namespace: str, service_account: str) -> SpiffeId:
    """The SPIRE Kubernetes default ID of a service account, in the policy's trust domain.

    Raises:
        IdentityError: the namespace or account name is not a valid SPIFFE ID path segment.
    """
    return SpiffeId.from_segments(policy.trust_domain, "ns", namespace, "sa", service_account)


def namespace_hosts_policy(policy: Policy, namespace: str) -> bool:
    """Whether some declared component can have an identity in ``namespace`` (see module docstring)."""
    for account in sorted(policy.components) + ["default"]:
        try:
            ident = policy.identify(workload_spiffe_id(policy, namespace, account))
        except IdentityError:
            return False
        if ident.component in policy.components:
            return True
    return False


def _gpus(w: Workload) -> list[str]:
    found = []
    for c in w.containers():
        res = as_map(c.spec.get("resources"), w.where, f"{c.name}.resources")
        for key in ("limits", "requests"):
            for name, qty in as_map(res.get(key), w.where, f"{c.name}.resources.{key}").items():
                name = str(name)
                if (name in GPU_RESOURCES or name.startswith(GPU_PREFIXES)) and str(qty) not in ("0", ""):
                    found.append(f"{c.label} {key} {name}={qty}")
    return found


def _finding(rule: R.Rule, w: Workload, message: str, subject: str) -> Finding:
    if w.part:  # a training-operator replica type (Master, Worker, Launcher...)
        return Finding(rule, w.resource, f"{w.part}: {message}", f"{w.part}/{subject}", w.location)
    return Finding(rule, w.resource, message, subject, w.location)


def check_identity(w: Workload, policy: Policy) -> Iterator[Finding]:
    """ZT-K8S-016: the service account's SPIFFE ID maps to no declared component."""
    sa = w.service_account
    try:
        sid = workload_spiffe_id(policy, w.namespace, sa)
    except IdentityError as exc:
        yield _finding(R.NO_IDENTITY, w, f"service account {sa!r} gives no valid SPIFFE ID: {exc}", sa)
        return
    ident = policy.identify(sid)
    if ident.component is None:
        yield _finding(R.NO_IDENTITY, w, f"{sid} matches no identity template of the policy", sa)
    elif ident.component not in policy.components:
        yield _finding(R.NO_IDENTITY, w, f"{sid} maps to component {ident.component!r}, which the policy does not "
                       "declare", sa)


def check_gpu(w: Workload, policy: Policy, gpu_namespaces: Collection[str] | None,
              hosts: dict[str, bool]) -> Iterator[Finding]:
    """ZT-K8S-017: GPUs requested in a namespace the policy (or ``gpu_namespaces``) does not allow."""
    gpus = _gpus(w)
    if not gpus:
        return
    ns = w.namespace
    if ns not in hosts:
        hosts[ns] = namespace_hosts_policy(policy, ns)
    if gpu_namespaces is not None and ns not in gpu_namespaces:
        why = f"namespace {ns!r} is not one of the GPU namespaces ({', '.join(sorted(gpu_namespaces)) or 'none'})"
    elif not hosts[ns]:
        why = f"no identity template of the policy places a component in namespace {ns!r}"
    else:
        return
    yield _finding(R.GPU_NAMESPACE, w, f"{why}: " + "; ".join(gpus), "gpu")


def check_policy(inv: Inventory, policy: Policy, *, gpu_namespaces: Collection[str] | None = None) -> Iterator[Finding]:
    """Every policy-dependent finding.

    Raises:
        AuditError: a field the checks read has the wrong type.
    """
    hosts: dict[str, bool] = {}
    for w in inv.workloads:
        if w.namespace in SYSTEM_NAMESPACES:
            continue  # platform namespaces are not tenants of the policy
        yield from check_identity(w, policy)
        yield from check_gpu(w, policy, gpu_namespaces, hosts)
