"""Find the pod specs inside Kubernetes workload objects, checking the shape of what the audit reads.

Covers Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob and
the Kubeflow training operators' replica specs (PyTorchJob, MPIJob, TFJob, XGBoostJob, PaddleJob).
A field of the wrong type (``containers`` that is not a list...) is an AuditError naming the object
and the field, so a malformed manifest can never be mistaken for a clean one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ztid.audit.findings import Location, Resource
from ztid.audit.k8s_load import Manifest
from ztid.errors import AuditError

__all__ = ["Container", "Workload", "as_list", "as_map", "workloads"]

_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"})
# Kubeflow training operators: spec.<field> is a map of replica type -> {template: PodTemplateSpec}.
_REPLICA_FIELDS = {
    "PyTorchJob": "pytorchReplicaSpecs",
    "MPIJob": "mpiReplicaSpecs",
    "TFJob": "tfReplicaSpecs",
    "XGBoostJob": "xgbReplicaSpecs",
    "PaddleJob": "paddleReplicaSpecs",
}
WORKLOAD_KINDS = frozenset({"Pod", "CronJob", *_TEMPLATE_KINDS, *_REPLICA_FIELDS})


def _fail(where: str, field: str, expected: str, value: object) -> AuditError:
    return AuditError(f"{where}: {field} must be {expected}, got {type(value).__name__} {str(value)[:80]!r}")


def as_map(value: object, where: str, field: str) -> Mapping[str, Any]:
    """``value`` as a mapping (``None`` → empty).

    Raises:
        AuditError: anything else.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, field, "a mapping", value)
    return value


def as_list(value: object, where: str, field: str) -> list[Any]:
    """``value`` as a list (``None`` → empty).

    Raises:
        AuditError: anything else.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, field, "a list", value)
    return value


def _str_map(value: object, where: str, field: str) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in as_map(value, where, field).items()}


@dataclass(frozen=True)
class Container:
    """One container of a pod spec and which list it came from (``containers``, ``initContainers``...)."""

    name: str
    spec: Mapping[str, Any]
    field: str
    where: str = ""

    @property
    def label(self) -> str:
        kind = {"containers": "container", "initContainers": "init container",
                "ephemeralContainers": "ephemeral container"}[self.field]
        return f"{kind} {self.name!r}"

    @property
    def security_context(self) -> Mapping[str, Any]:
        return as_map(self.spec.get("securityContext"), self.where, f"{self.label} securityContext")

    @property
    def is_native_sidecar(self) -> bool:
        """An init container with ``restartPolicy: Always`` (a Kubernetes 1.28+ sidecar)."""
        return self.field == "initContainers" and self.spec.get("restartPolicy") == "Always"


@dataclass(frozen=True)
class Workload:
    """A pod spec found in an object, with the pod template's labels and annotations.

    ``part`` names the replica type of a training-operator job (``Worker``), else ``""``.
    """

    resource: Resource
    location: Location
    pod_spec: Mapping[str, Any]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    part: str = ""

    @cached_property
    def where(self) -> str:
        return f"{self.location}: {self.resource}" + (f" ({self.part})" if self.part else "")

    @property
    def namespace(self) -> str:
        return self.resource.namespace or "default"

    @property
    def service_account(self) -> str:
        sa = self.pod_spec.get("serviceAccountName") or self.pod_spec.get("serviceAccount") or "default"
        return str(sa)

    def containers(self) -> Iterator[Container]:
        """Every container, init container and ephemeral container."""
        return iter(self._containers)

    @cached_property
    def _containers(self) -> tuple[Container, ...]:
        out = []
        for field in ("containers", "initContainers", "ephemeralContainers"):
            for i, c in enumerate(as_list(self.pod_spec.get(field), self.where, f"spec.{field}")):
                c = as_map(c, self.where, f"spec.{field}[{i}]")
                out.append(Container(str(c.get("name") or f"#{i}"), c, field, self.where))
        return tuple(out)

    @property
    def pod_security_context(self) -> Mapping[str, Any]:
        return as_map(self.pod_spec.get("securityContext"), self.where, "spec.securityContext")

    def volumes(self) -> list[Mapping[str, Any]]:
        return [as_map(v, self.where, f"spec.volumes[{i}]")
                for i, v in enumerate(as_list(self.pod_spec.get("volumes"), self.where, "spec.volumes"))]


def _from_template(m: Manifest, template: object, where: str, field: str, part: str = "") -> Workload:
    template = as_map(template, where, field)
    meta = as_map(template.get("metadata"), where, f"{field}.metadata")
    spec = as_map(template.get("spec"), where, f"{field}.spec")
    return Workload(
        Resource(m.kind, m.namespace or "default", m.name), m.location, spec,
        _str_map(meta.get("labels"), where, f"{field}.metadata.labels"),
        _str_map(meta.get("annotations"), where, f"{field}.metadata.annotations"), part,
    )


def workloads(m: Manifest) -> list[Workload]:
    """The pod specs inside ``m`` (empty for kinds that hold none).

    Raises:
        AuditError: a field on the way to the pod spec has the wrong type.
    """
    kind = m.kind
    if kind not in WORKLOAD_KINDS:
        return []
    where = f"{m.location}: {kind}/{m.name}"
    spec = as_map(m.obj.get("spec"), where, "spec")
    if kind == "Pod":
        return [Workload(Resource(kind, m.namespace or "default", m.name), m.location, spec,
                         _str_map(m.metadata.get("labels"), where, "metadata.labels"),
                         _str_map(m.metadata.get("annotations"), where, "metadata.annotations"))]
    if kind in _TEMPLATE_KINDS:
        return [_from_template(m, spec.get("template"), where, "spec.template")]
    if kind == "CronJob":
        job = as_map(spec.get("jobTemplate"), where, "spec.jobTemplate")
        job_spec = as_map(job.get("spec"), where, "spec.jobTemplate.spec")
        return [_from_template(m, job_spec.get("template"), where, "spec.jobTemplate.spec.template")]
    field = _REPLICA_FIELDS[kind]
    replicas = as_map(spec.get(field), where, f"spec.{field}")
    out = []
    for part, rspec in sorted(replicas.items()):
        rspec = as_map(rspec, where, f"spec.{field}.{part}")
        out.append(_from_template(m, rspec.get("template"), where, f"spec.{field}.{part}.template", str(part)))
    return out
