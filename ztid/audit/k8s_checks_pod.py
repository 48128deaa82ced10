"""Checks on one workload's pod spec: host namespaces, privilege, root, RDMA, sidecar, token, env secrets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ztid.audit import k8s_rules as R
from ztid.audit.findings import Finding, Rule
from ztid.audit.k8s_inventory import Inventory
from ztid.audit.k8s_podspec import Container, Workload, as_list, as_map
from ztid.audit.k8s_secrets import credential_reason

__all__ = ["POD_CHECKS", "check_workload"]

MESH_CONTAINERS = frozenset({"istio-proxy", "envoy", "envoy-sidecar", "linkerd-proxy", "ztid-sidecar", "ztid"})
RDMA_CAPABILITIES = frozenset({"IPC_LOCK", "NET_RAW"})
RDMA_DEVICE_PATHS = ("/dev/infiniband", "/sys/class/infiniband", "/dev/rdma")


def _finding(rule: Rule, w: Workload, message: str, subject: str = "") -> Finding:
    if w.part:  # a training-operator replica type (Master, Worker, Launcher...)
        return Finding(rule, w.resource, f"{w.part}: {message}", f"{w.part}/{subject}", w.location)
    return Finding(rule, w.resource, message, subject, w.location)


def check_host_namespaces(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-002/003/004: hostNetwork, hostPID, hostIPC."""
    for key, rule in (("hostNetwork", R.HOST_NETWORK), ("hostPID", R.HOST_PID), ("hostIPC", R.HOST_IPC)):
        if w.pod_spec.get(key) is True:
            extra = "; NetworkPolicy does not apply to it" if key == "hostNetwork" else ""
            yield _finding(rule, w, f"{key}: true{extra}", key)


def check_privileged(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-005: privileged containers (init and ephemeral too), SYS_ADMIN/ALL capabilities."""
    for c in w.containers():
        sc = c.security_context
        if sc.get("privileged") is True:
            yield _finding(R.PRIVILEGED, w, f"{c.label} is privileged", c.name)
        caps = as_map(sc.get("capabilities"), w.where, f"{c.name}.securityContext.capabilities")
        added = {str(x).upper().removeprefix("CAP_") for x in as_list(caps.get("add"), w.where, "capabilities.add")}
        if "SYS_ADMIN" in added or "ALL" in added:
            yield _finding(R.PRIVILEGED, w, f"{c.label} adds capability {'ALL' if 'ALL' in added else 'SYS_ADMIN'}",
                           c.name + "/caps")


def _effective(c: Container, pod_sc: Mapping[str, Any], key: str) -> Any:
    # Container securityContext overrides the pod's (Kubernetes PodSecurityContext semantics).
    value = c.security_context.get(key)
    return pod_sc.get(key) if value is None else value


def check_root(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-006 (runs as root) and ZT-K8S-007 (may run as root); container settings override the pod's."""
    pod_sc = w.pod_security_context
    for c in w.containers():
        if c.field == "ephemeralContainers":
            continue  # debugging containers are covered by the privileged check; their user is the debugger's
        user = _effective(c, pod_sc, "runAsUser")
        non_root = _effective(c, pod_sc, "runAsNonRoot")
        if user == 0 or non_root is False:
            why = "runAsUser: 0" if user == 0 else "runAsNonRoot: false"
            yield _finding(R.RUNS_AS_ROOT, w, f"{c.label} runs as root ({why})", c.name)
        elif non_root is not True and not (isinstance(user, int) and user > 0):
            yield _finding(R.ROOT_NOT_FORBIDDEN, w, f"{c.label} sets neither runAsNonRoot: true nor a non-zero "
                           "runAsUser (pod or container level)", c.name)


def _resource_names(c: Container, w: Workload) -> set[str]:
    res = as_map(c.spec.get("resources"), w.where, f"{c.name}.resources")
    names: set[str] = set()
    for key in ("requests", "limits"):
        names.update(str(k) for k in as_map(res.get(key), w.where, f"{c.name}.resources.{key}"))
    return names


def check_rdma(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-008: RDMA/InfiniBand resources, capabilities and device hostPaths."""
    signals: list[str] = []
    for c in w.containers():
        for name in sorted(_resource_names(c, w)):
            low = name.lower()
            if low.startswith("rdma/") or "infiniband" in low or low.startswith(("mellanox.com/", "nvidia.com/rdma")):
                signals.append(f"{c.label} requests {name}")
        caps = as_map(c.security_context.get("capabilities"), w.where, f"{c.name}.securityContext.capabilities")
        added = {str(x).upper().removeprefix("CAP_") for x in as_list(caps.get("add"), w.where, "capabilities.add")}
        for cap in sorted(added & RDMA_CAPABILITIES):
            signals.append(f"{c.label} adds {cap}")
    for v in w.volumes():
        host = as_map(v.get("hostPath"), w.where, "volumes.hostPath")
        path = str(host.get("path", ""))
        if path.startswith(RDMA_DEVICE_PATHS):
            signals.append(f"hostPath volume {path}")
    networks = w.annotations.get("k8s.v1.cni.cncf.io/networks", "")
    if signals and networks:
        signals.append(f"secondary networks {networks}")
    if signals:
        yield _finding(R.RDMA, w, "RDMA/InfiniBand access bypasses the mesh and NetworkPolicy: " + "; ".join(signals))


def _injection(w: Workload, inv: Inventory) -> tuple[bool, str]:
    pod_flag = w.labels.get("sidecar.istio.io/inject", w.annotations.get("sidecar.istio.io/inject"))
    if pod_flag is not None and pod_flag.lower() == "false":
        return False, "sidecar injection disabled (sidecar.istio.io/inject: \"false\")"
    if w.annotations.get("linkerd.io/inject", "").lower() == "disabled":
        return False, "linkerd injection disabled"
    if pod_flag is not None and pod_flag.lower() == "true":
        return True, ""
    if w.labels.get("istio.io/rev") or w.annotations.get("linkerd.io/inject", "").lower() == "enabled":
        return True, ""
    ns_labels = inv.namespace_labels.get(w.namespace, {})
    if ns_labels.get("istio-injection") == "enabled" or ns_labels.get("istio.io/rev"):
        return True, ""
    if ns_labels.get("istio.io/dataplane-mode") == "ambient":
        return True, ""
    return False, "no mesh sidecar container and no injection label/annotation on the pod or its namespace"


def check_sidecar(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-009: no mesh sidecar container and no injection."""
    names = {c.name for c in w.containers() if c.field == "containers" or c.is_native_sidecar}
    if names & MESH_CONTAINERS:
        return
    injected, why = _injection(w, inv)
    if not injected:
        yield _finding(R.NO_SIDECAR, w, why)


def check_automount(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-013: service-account token automounted (the pod's setting beats the account's)."""
    pod_value = w.pod_spec.get("automountServiceAccountToken")
    sa_name = w.service_account
    if pod_value is False:
        return
    if pod_value is True:
        yield _finding(R.AUTOMOUNT, w, "automountServiceAccountToken: true on the pod")
        return
    sa = inv.service_accounts.get((w.namespace, sa_name))
    if sa is not None and sa.obj.get("automountServiceAccountToken") is False:
        return
    where = f"service account {sa_name!r} does not disable it" if sa is not None else \
        f"neither the pod nor service account {sa_name!r} (not in the input) disables it"
    yield _finding(R.AUTOMOUNT, w, f"token automounted: {where}")


def check_env_secrets(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """ZT-K8S-014: credentials as literal env values or command-line arguments."""
    for c in w.containers():
        for i, env in enumerate(as_list(c.spec.get("env"), w.where, f"{c.name}.env")):
            env = as_map(env, w.where, f"{c.name}.env[{i}]")
            name = str(env.get("name", ""))
            if "value" not in env:
                continue  # valueFrom (secretKeyRef, fieldRef...) is the right way
            reason = credential_reason(name, env.get("value"))
            if reason:
                yield _finding(R.ENV_SECRET, w, f"{c.label} env {name}: {reason}; use valueFrom.secretKeyRef",
                               f"{c.name}/env/{name}")
        for j, arg in enumerate(as_list(c.spec.get("args"), w.where, f"{c.name}.args") +
                                as_list(c.spec.get("command"), w.where, f"{c.name}.command")):
            reason = credential_reason("", arg)
            if reason:
                yield _finding(R.ENV_SECRET, w, f"{c.label} command line: {reason}", f"{c.name}/arg/{j}")


POD_CHECKS = (check_host_namespaces, check_privileged, check_root, check_rdma, check_sidecar, check_automount,
              check_env_secrets)


def check_workload(w: Workload, inv: Inventory) -> Iterator[Finding]:
    """Every pod-level finding for ``w``.

    Raises:
        AuditError: a field the checks read has the wrong type.
    """
    for check in POD_CHECKS:
        yield from check(w, inv)
