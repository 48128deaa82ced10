"""Policy: a validated PolicySpec compiled into dict lookups that answer decide() with a Decision.

Hot path: ``decide()`` first looks up ``(source, target, action, target_tenant)`` in a per-policy
cache of finished :class:`Decision` values (Decisions are immutable, so one object serves every
equal request). A miss parses the source once (identities are cached per source string), checks
the matrix and stores the result. A reload builds a new Policy, so caches never outlive the policy
they came from. Both caches are bounded: when full they are cleared, never grown.

``decide()`` never raises: bad input is a deny with a stable ``code``; a bug is ``internal_error``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ztid.errors import IdentityError
from ztid.identity import Identity, IdentityTemplate
from ztid.policy import model as m
from ztid.policy.model import Decision, Explanation, Federation, PolicySpec, Rule
from ztid.spiffeid import SpiffeId, TrustDomain

if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import BundleSet

__all__ = ["Policy"]

log = logging.getLogger("ztid.policy")
CACHE_LIMIT: Final = 65536
_Resolved = Identity | tuple[str, str, Identity | None]  # an identity, or (deny code, reason, identity)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return repr(value)[:200]
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not break a deny
        return f"<{type(value).__name__}>"


def _quote(value: object) -> str:
    return repr(value[:200]) if isinstance(value, str) else _text(value)


class Policy:
    """A compiled policy. Build with :func:`ztid.policy.load_policy` or :func:`ztid.policy.parse_policy`.

    Immutable: reloading produces a new Policy (see :class:`ztid.policy.watch.PolicyWatcher`).
    """

    __slots__ = (
        "spec", "digest", "mode", "tenancy", "trust_domain", "trust_domains", "components", "actions",
        "_templates", "_allow", "_deny", "_by_location", "_ids", "_cache", "_cache_get", "_isolated", "_audit",
    )

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.digest: str = spec.digest
        self.mode: str = spec.mode
        self.tenancy: str = spec.tenancy
        self.trust_domain: TrustDomain = spec.trust_domain
        self.trust_domains: frozenset[TrustDomain] = frozenset({spec.trust_domain, *(f.trust_domain for f in spec.federation)})
        self.components: frozenset[str] = frozenset(c.name for c in spec.components)
        self.actions: frozenset[str] = spec.actions
        self._templates: tuple[IdentityTemplate, ...] = spec.identities
        self._allow: dict[tuple[str, str, str], Rule] = {}
        self._deny: dict[tuple[str, str], Rule] = {}
        self._by_location: dict[str, Rule] = {}
        for rule in spec.rules():
            self._by_location[rule.location] = rule
            if rule.effect == "deny":
                self._deny[(rule.source, rule.target)] = rule
            else:
                for action in rule.actions:
                    self._allow[(rule.source, rule.target, action)] = rule
        self._ids: dict[str, _Resolved] = {}
        self._cache: dict[tuple[Any, Any, Any, Any], Decision] = {}
        self._cache_get = self._cache.get
        self._isolated = spec.tenancy == "isolated"
        self._audit = spec.mode == "audit"  # assigned last: from here on the object is frozen

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_audit"):
            raise AttributeError("Policy is immutable; load a new one (PolicyWatcher swaps them)")
        object.__setattr__(self, name, value)

    # -- identities ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Where the policy came from (path as given, or ``"<string>"``)."""
        return self.spec.name

    @property
    def identities(self) -> tuple[IdentityTemplate, ...]:
        """The identity templates, first match wins."""
        return self._templates

    @property
    def federation(self) -> tuple[Federation, ...]:
        """The federated trust domains."""
        return self.spec.federation

    def rules(self) -> tuple[Rule, ...]:
        """Every rule in file order."""
        return self.spec.rules()

    def match(self, spiffe_id: SpiffeId) -> tuple[IdentityTemplate | None, Mapping[str, str], int]:
        """The first template matching ``spiffe_id``, its captures, and how many templates were tried."""
        for i, template in enumerate(self._templates):
            captures = template.match(spiffe_id)
            if captures is not None:
                return template, captures, i + 1
        return None, {}, len(self._templates)

    def identify(self, spiffe_id: SpiffeId | str) -> Identity:
        """Map ``spiffe_id`` to an :class:`Identity`; ``component`` is ``None`` when no template matches.

        Raises:
            IdentityError: ``spiffe_id`` is a string that is not a valid SPIFFE ID.
        """
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        template, captures, _ = self.match(sid)
        return Identity.unmapped(sid) if template is None else template.identity(sid, captures)

    def _resolve(self, text: str) -> _Resolved:
        hit = self._ids.get(text)
        if hit is not None:
            return hit
        resolved: _Resolved
        try:
            sid = SpiffeId.parse(text)
        except IdentityError as exc:
            resolved = (m.MALFORMED_IDENTITY, f"source is not a valid SPIFFE ID: {exc}", None)
        else:
            ident = self.identify(sid)
            if not sid.path:
                resolved = (m.MALFORMED_IDENTITY, f"source {text!r} is a trust domain ID, which names no workload", None)
            elif sid.trust_domain not in self.trust_domains:
                resolved = (m.FOREIGN_TRUST_DOMAIN, f"source {text!r} is in trust domain {sid.trust_domain.name!r}, "
                                                    "which this policy neither owns nor federates with", ident)
            else:
                resolved = ident
        if len(self._ids) >= CACHE_LIMIT:
            self._ids.clear()
        self._ids[text] = resolved
        return resolved

    # -- decisions ----------------------------------------------------------------------------

    def decide(
        self,
        source: SpiffeId | Identity | str,
        target: str | Identity | SpiffeId,
        action: str,
        *,
        target_tenant: str | None = None,
    ) -> Decision:
        """Decide whether ``source`` may do ``action`` on ``target``. Never raises.

        Args:
            source: the authenticated peer: a SpiffeId, an Identity (re-mapped by this policy's
                templates; only its SPIFFE ID counts), or a SPIFFE ID string.
            target: a component name, or the target's Identity/SpiffeId (its tenant then counts).
            action: an action from the policy's vocabulary.
            target_tenant: the target's tenant when known (overrides one taken from ``target``);
                under ``tenancy: isolated`` the source's tenant must equal it.

        Returns:
            A Decision; in audit mode a matrix deny comes back allowed with ``would_deny=True``.
        """
        if type(source) is SpiffeId:  # key by its text: SpiffeId's own __hash__/__eq__ cost more than the lookup
            source = str(source)
        try:
            hit = self._cache_get((source, target, action, target_tenant))
            if hit is not None:
                return hit
        except TypeError:  # unhashable garbage: the slow path denies it with a reason
            pass
        try:
            return self._decide_slow(source, target, action, target_tenant)
        except Exception as exc:  # noqa: BLE001 - fail closed on our own bugs
            log.exception("policy decision failed; denying")
            return Decision.deny(m.INTERNAL_ERROR, f"internal error while deciding: {type(exc).__name__}",
                                 policy_digest=self.digest, mode=self.mode, target=_text(target), action=_text(action))

    def _decide_slow(self, source: object, target: object, action: object, target_tenant: object) -> Decision:
        if isinstance(source, str):
            src = source
        elif isinstance(source, SpiffeId):
            src = str(source)
        elif isinstance(source, Identity) and isinstance(source.spiffe_id, SpiffeId):
            src = str(source.spiffe_id)
        else:
            return self._finish(m.MALFORMED_IDENTITY, f"source must be a SPIFFE ID, not {type(source).__name__}",
                                None, None, target, action, target_tenant)
        tenant = target_tenant
        if isinstance(target, (Identity, SpiffeId)):
            sid = target.spiffe_id if isinstance(target, Identity) else target
            tident = self.identify(sid)
            if tident.component is None or sid.trust_domain not in self.trust_domains:
                target = str(sid)  # no component: _evaluate denies it as unknown_target, after the source checks
            else:
                target, tenant = tident.component, (tenant if tenant is not None else tident.tenant)
        cacheable = type(target) is str and type(action) is str and (tenant is None or type(tenant) is str)
        if not cacheable:
            return self._evaluate(src, target, action, tenant)
        key = (src, target, action, tenant)
        hit = self._cache_get(key)
        if hit is not None:
            return hit
        decision = self._evaluate(src, target, action, tenant)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _evaluate(self, src: str, target: object, action: object, tenant: object) -> Decision:
        resolved = self._resolve(src)
        if isinstance(resolved, tuple):
            code, reason, ident = resolved
            return self._finish(code, reason, None, ident, target, action, tenant)
        ident = resolved
        comp = ident.component
        if comp is None:
            return self._finish(m.UNKNOWN_COMPONENT, f"source {src!r} matches no identity template", None,
                                ident, target, action, tenant)
        if comp not in self.components:
            return self._finish(m.UNKNOWN_COMPONENT, f"source component {comp!r} is not declared in the policy",
                                None, ident, target, action, tenant)
        if not isinstance(target, str) or target not in self.components:
            return self._finish(m.UNKNOWN_TARGET, f"target {_quote(target)} is not a component of the policy",
                                None, ident, target, action, tenant)
        if not isinstance(action, str) or action not in self.actions:
            return self._finish(m.UNKNOWN_ACTION, f"action {_quote(action)} is not one of the policy's actions "
                                f"({', '.join(sorted(self.actions))})", None, ident, target, action, tenant)
        if tenant is not None and not isinstance(tenant, str):
            return self._finish(m.TENANT_MISMATCH, f"target tenant must be a string, not {type(tenant).__name__}",
                                None, ident, target, action, tenant)
        deny = self._deny.get((comp, target))
        if deny is not None:
            return self._finish(m.EXPLICIT_DENY, f"{comp} is explicitly denied access to {target}",
                                deny.location, ident, target, action, tenant)
        rule = self._allow.get((comp, target, action))
        if rule is None:
            return self._finish(m.NO_MATCHING_RULE, f"no rule allows {comp} to {action} {target}",
                                None, ident, target, action, tenant)
        if self._isolated and tenant is not None and ident.tenant != tenant:
            return self._finish(m.TENANT_MISMATCH, f"tenancy is isolated: source tenant {ident.tenant!r} "
                                f"may not reach target tenant {tenant!r}", rule.location, ident, target, action, tenant)
        return Decision(True, m.ALLOWED, f"{comp} may {action} {target}", rule.location, self.digest, self.mode,
                        False, ident, target, action, tenant)

    def _finish(self, code: str, reason: str, rule: str | None, ident: Identity | None,
                target: object, action: object, tenant: object) -> Decision:
        target_text, action_text = _text(target), _text(action)
        tenant_text = tenant if isinstance(tenant, str) else None
        if (self._audit and code in m.AUDITABLE_CODES and isinstance(target, str) and isinstance(action, str)
                and (tenant is None or isinstance(tenant, str))):  # a request of the wrong types is no matrix question
            return Decision(True, code, f"audit mode: allowed, but enforce mode would deny: {reason}", rule,
                            self.digest, self.mode, True, ident, target_text, action_text, tenant_text)
        return Decision(False, code, reason, rule, self.digest, self.mode, False, ident, target_text, action_text,
                        tenant_text)

    # -- explanation --------------------------------------------------------------------------

    def explain(
        self,
        source: SpiffeId | Identity | str,
        target: str | Identity | SpiffeId,
        action: str,
        *,
        target_tenant: str | None = None,
    ) -> Explanation:
        """Decide, and say how: which template matched (with captures), which rule decided, and why.

        The decision is exactly what :meth:`decide` returns; the steps are reconstructed around it.
        """
        decision = self.decide(source, target, action, target_tenant=target_tenant)
        steps: list[str] = []
        template: IdentityTemplate | None = None
        captures: Mapping[str, str] = {}
        tried: tuple[str, ...] = ()
        sid: SpiffeId | None = None
        if isinstance(source, Identity):
            sid = source.spiffe_id
        elif isinstance(source, SpiffeId):
            sid = source
        elif isinstance(source, str):
            try:
                sid = SpiffeId.parse(source)
            except IdentityError as exc:
                steps.append(f"source is not a valid SPIFFE ID: {exc}")
        else:
            steps.append(f"source is a {type(source).__name__}, not a SPIFFE ID")
        if sid is not None:
            td = sid.trust_domain
            where = ("the policy's own trust domain" if td == self.trust_domain else
                     "a federated trust domain" if td in self.trust_domains else "foreign to this policy")
            steps.append(f"source {str(sid)!r} is in trust domain {td.name!r}: {where}")
            template, captures, n = self.match(sid)
            tried = tuple(t.text for t in self._templates[:n])
            if template is None:
                steps.append(f"no identity template matched (tried {n})")
            else:
                caught = ", ".join(f"{k}={v!r}" for k, v in captures.items())
                steps.append(f"identity template #{n} {template.text!r} matched: {caught}")
        steps.append(f"target {decision.target!r}, action {decision.action!r}"
                     + (f", target tenant {decision.target_tenant!r}" if decision.target_tenant is not None else ""))
        if self.tenancy == "isolated":
            steps.append("tenancy is isolated: an allowed request also needs equal tenants when the target tenant is known")
        rule = self._by_location.get(decision.rule) if decision.rule else None
        if rule is not None:
            steps.append(f"rule {rule.location} (line {rule.line}) decided: {rule.effect}")
        verdict = "ALLOWED" if decision.allowed else "DENIED"
        steps.append(f"{verdict} ({decision.code}): {decision.reason}")
        return Explanation(decision, _text(str(source) if isinstance(source, (SpiffeId, Identity)) else source),
                           None if template is None else template.text, dict(captures), tried,
                           decision.rule, 0 if rule is None else rule.line, tuple(steps))

    # -- federation ---------------------------------------------------------------------------

    def bundle_paths(self) -> dict[TrustDomain, Path]:
        """Each federated trust domain's bundle file, resolved against the policy file's directory."""
        base = Path(os.path.dirname(self.spec.path)) if self.spec.path else Path.cwd()
        return {f.trust_domain: base / f.bundle for f in self.spec.federation if f.bundle is not None}

    def load_federation_bundles(self) -> "BundleSet":
        """Load every federated bundle named in the policy (lazily imports :mod:`ztid.bundle`).

        Raises:
            BundleError: a bundle file is unreadable or malformed.
        """
        from ztid.bundle import Bundle, BundleSet

        return BundleSet(Bundle.load(path, trust_domain=td) for td, path in self.bundle_paths().items())

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, digest={self.digest[:12]}…, mode={self.mode!r}, components={len(self.components)})"

