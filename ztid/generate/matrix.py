"""Compile policy.yaml into the cluster-level allow matrix the Kubernetes generators render.

Pods are assumed to run under a service account named for their component and to carry the
label ``app.kubernetes.io/component: <component>`` (the audit's ZT-K8S-016 checks the first). A pod
of component ``c`` in namespace ``ns`` therefore has the SPIRE default ID
``spiffe://<trust domain>/ns/<ns>/sa/<c>``, and every cell of the matrix is decided by
:meth:`ztid.policy.Policy.decide` on those IDs: tenancy, explicit denies and the identity templates
count exactly as they do at run time. Audit-mode allows (``would_deny``) are not allows here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ztid.errors import IdentityError, UsageError
from ztid.identity import IdentityTemplate
from ztid.policy import Policy
from ztid.spiffeid import SpiffeId

__all__ = ["Endpoint", "Matrix", "Path", "Principal", "compile_matrix", "template_namespaces"]


@dataclass(frozen=True, order=True)
class Endpoint:
    """Pods of one component in one namespace."""

    namespace: str
    component: str


@dataclass(frozen=True, order=True)
class Path:
    """``source`` may reach ``target`` with ``actions`` (non-empty)."""

    source: Endpoint
    target: Endpoint
    actions: tuple[str, ...]


@dataclass(frozen=True, order=True)
class Principal:
    """An Istio ``source.principals`` entry (SPIFFE ID without ``spiffe://``; ``*`` suffix = prefix match)
    standing for identities the policy maps to ``component`` (and ``tenant``)."""

    text: str
    component: str
    tenant: str | None
    template: str


@dataclass(frozen=True)
class Matrix:
    """The compiled matrix for a set of namespaces."""

    policy: Policy
    namespaces: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    paths: tuple[Path, ...]
    notes: tuple[str, ...]

    def allowed(self, source: Endpoint, target: Endpoint) -> tuple[str, ...]:
        """The actions ``source`` may use on ``target`` (empty if none)."""
        for p in self.paths:
            if p.source == source and p.target == target:
                return p.actions
        return ()

    def callers(self, target: Endpoint) -> list[Path]:
        """The paths into ``target``, sorted."""
        return self._index()[0].get(target, [])

    def callees(self, source: Endpoint) -> list[Path]:
        """The paths out of ``source``, sorted."""
        return self._index()[1].get(source, [])

    def _index(self) -> tuple[dict[Endpoint, list[Path]], dict[Endpoint, list[Path]]]:
        cached = self.__dict__.get("_by_endpoint")
        if cached is None:
            into: dict[Endpoint, list[Path]] = {}
            out: dict[Endpoint, list[Path]] = {}
            for p in self.paths:
                into.setdefault(p.target, []).append(p)
                out.setdefault(p.source, []).append(p)
            cached = (into, out)
            object.__setattr__(self, "_by_endpoint", cached)
        return cached


def sa_id(policy: Policy, namespace: str, service_account: str) -> SpiffeId:
    """``spiffe://<policy trust domain>/ns/<namespace>/sa/<service_account>``.

    Raises:
        IdentityError: a name that is no valid SPIFFE ID path segment.
    """
    return SpiffeId.from_segments(policy.trust_domain, "ns", namespace, "sa", service_account)


def template_namespaces(policy: Policy) -> tuple[str, ...]:
    """Namespaces written literally in Kubernetes-shaped templates (``.../ns/<literal>/sa/{component}``)."""
    out = []
    for t in policy.identities:
        segs = t.segments
        if len(segs) == 4 and segs[0] == (False, "ns") and segs[2] == (False, "sa") and not segs[1][0]:
            out.append(segs[1][1])
    return tuple(dict.fromkeys(out))


def _allowed_actions(policy: Policy, source: SpiffeId, target: SpiffeId | str, *,
                     target_tenant: str | None = None) -> tuple[str, ...]:
    acts = []
    for action in sorted(policy.actions):
        d = policy.decide(source, target, action, target_tenant=target_tenant)
        if d.allowed and not d.would_deny:
            acts.append(action)
    return tuple(acts)


def _allow_pairs(policy: Policy) -> frozenset[tuple[str, str]]:
    """(source, target) component pairs some allow rule names: deny by default rules out every other pair."""
    return frozenset((r.source, r.target) for r in policy.rules() if r.effect == "allow")


def compile_matrix(policy: Policy, namespaces: Iterable[str]) -> Matrix:
    """Decide every (component, namespace) → (component, namespace) pair with the policy.

    Raises:
        UsageError: no namespaces, or a namespace name that cannot appear in a SPIFFE ID.
    """
    nss = tuple(dict.fromkeys(namespaces))
    if not nss:
        raise UsageError("no namespaces to generate for (name them with --namespace)")
    notes: list[str] = []
    endpoints: dict[Endpoint, tuple[SpiffeId, str | None]] = {}  # endpoint -> (its ID, its tenant)
    for ns in nss:
        for comp in sorted(policy.components):
            try:
                sid = sa_id(policy, ns, comp)
            except IdentityError as exc:
                raise UsageError(f"namespace {ns!r} or component {comp!r} cannot appear in a SPIFFE ID: {exc}") from exc
            ident = policy.identify(sid)
            if ident.component == comp:
                endpoints[Endpoint(ns, comp)] = (sid, ident.tenant)
            else:
                notes.append(f"service account {comp!r} in namespace {ns!r} is {ident.component or 'no component'} "
                             f"to the policy, so component {comp!r} gets no rules there")
    candidates = _allow_pairs(policy)
    paths = []
    for src, (src_id, _) in endpoints.items():
        for tgt, (_, tgt_tenant) in endpoints.items():
            if (src.component, tgt.component) not in candidates:
                continue
            # The target as (component, tenant) is what decide() derives from its SPIFFE ID.
            acts = _allowed_actions(policy, src_id, tgt.component, target_tenant=tgt_tenant)
            if acts:
                paths.append(Path(src, tgt, acts))
    return Matrix(policy, nss, tuple(endpoints), tuple(sorted(paths)), tuple(notes))


def _principal(t: IdentityTemplate, component: str, tenant: str | None) -> tuple[str, SpiffeId] | None:
    """The principal text for ``t`` with the captures filled in, and a sample ID it stands for."""
    text, sample = [], []
    values = {"component": component, "tenant": tenant}
    for i, (is_capture, value) in enumerate(t.segments):
        if not is_capture:
            text.append(value)
            sample.append(value)
        elif value == "workload":
            if i != len(t.segments) - 1 or t.rest is not None:
                return None  # Istio matches only a prefix or suffix wildcard
            text.append("*")
            sample.append("w")
        else:
            v = values.get(value)
            if v is None:
                return None
            text.append(v)
            sample.append(v)
    if t.rest is not None:
        text.append("*")
        sample.append("w")
    body = "/".join(text)
    return f"{t.trust_domain.name}/{body}", SpiffeId.from_segments(t.trust_domain, *sample)


def principals_for(policy: Policy, source: Endpoint, target: Endpoint) -> tuple[list[Principal], list[str]]:
    """Every template-derived principal for ``source``'s component that the policy allows to reach ``target``.

    A principal is kept only if a sample ID it stands for maps back to the component through the very
    template (first match wins) and the policy allows it to reach ``target``'s Kubernetes ID. Principals
    for templates Istio cannot express are reported as notes.
    """
    out, notes = [], []
    target_id = sa_id(policy, target.namespace, target.component)
    for t in policy.identities:
        has_tenant = any(c and v == "tenant" for c, v in t.segments)
        made = _principal(t, source.component, source.namespace if has_tenant else None)
        if made is None:
            notes.append(f"template {t.text} cannot be written as an Istio principal (wildcard inside the path)")
            continue
        text, sample = made
        ident = policy.identify(sample)
        if ident.template != t.text or ident.component != source.component:
            continue  # an earlier template claims these IDs
        if _allowed_actions(policy, sample, target_id):
            out.append(Principal(text, source.component, ident.tenant, t.text))
    return out, notes
