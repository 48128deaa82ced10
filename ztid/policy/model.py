"""The policy's data types: frozen dataclasses only, no I/O, no YAML, no evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ztid.identity import Identity, IdentityTemplate
from ztid.spiffeid import TrustDomain

__all__ = [
    "ALLOWED",
    "DECISION_CODES",
    "ComponentSpec",
    "Decision",
    "Explanation",
    "Federation",
    "PolicySpec",
    "Rule",
]

# Stable decision codes: safe as metric labels, pinned by tests, listed in docs/policy.md.
ALLOWED: Final = "allowed"
MALFORMED_IDENTITY: Final = "malformed_identity"
FOREIGN_TRUST_DOMAIN: Final = "foreign_trust_domain"
UNKNOWN_COMPONENT: Final = "unknown_component"
UNKNOWN_TARGET: Final = "unknown_target"
UNKNOWN_ACTION: Final = "unknown_action"
EXPLICIT_DENY: Final = "explicit_deny"
NO_MATCHING_RULE: Final = "no_matching_rule"
TENANT_MISMATCH: Final = "tenant_mismatch"
INTERNAL_ERROR: Final = "internal_error"
NO_PEER: Final = "no_peer"
NO_POLICY: Final = "no_policy"

DECISION_CODES: Final = frozenset({
    ALLOWED, MALFORMED_IDENTITY, FOREIGN_TRUST_DOMAIN, UNKNOWN_COMPONENT, UNKNOWN_TARGET, UNKNOWN_ACTION,
    EXPLICIT_DENY, NO_MATCHING_RULE, TENANT_MISMATCH, INTERNAL_ERROR, NO_PEER, NO_POLICY,
})
# Denies that audit mode turns into allows: what the matrix says about a well-formed request.
# A source that is no usable identity (malformed, foreign trust domain, no peer), an action outside
# the vocabulary (a bug at the enforcement point) and our own failures stay denies in every mode.
AUDITABLE_CODES: Final = frozenset({UNKNOWN_COMPONENT, UNKNOWN_TARGET, EXPLICIT_DENY, NO_MATCHING_RULE, TENANT_MISMATCH})

Mode = Literal["enforce", "audit"]
Tenancy = Literal["isolated", "shared"]


@dataclass(frozen=True, slots=True)
class Federation:
    """A federated trust domain whose IDs the identity templates may name.

    Attributes:
        trust_domain: the federated trust domain.
        bundle: its bundle file as written in the policy (relative to the policy file), or ``None``
            when bundles come from elsewhere (e.g. the SPIRE Workload API).
        line: the line of its entry in the policy file.
    """

    trust_domain: TrustDomain
    bundle: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """One cell of the matrix: ``source`` may (allow) or may not (deny) reach ``target``.

    Attributes:
        source: the component the rule belongs to.
        target: the component it names.
        effect: ``"allow"`` or ``"deny"``.
        actions: the allowed actions; empty for a deny (a deny covers every action).
        location: its path in the file, e.g. ``"components.training.allow.data-store"``.
        line: its line in the file.
    """

    source: str
    target: str
    effect: Literal["allow", "deny"]
    actions: frozenset[str] = frozenset()
    location: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component and its outgoing rules, as declared under ``components:``."""

    name: str
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A validated policy file. :class:`ztid.policy.Policy` compiles one of these for decisions.

    Attributes:
        name: where it came from (the path as given, or ``"<string>"``).
        digest: sha256 (hex) of the file's bytes.
        version: the schema version (1).
        trust_domain: the policy's own trust domain.
        federation: federated trust domains, in file order.
        actions: the action vocabulary (``actions:``, default ``read`` and ``write``).
        identities: the identity templates, in file order (first match wins).
        tenancy: ``"isolated"`` (default) or ``"shared"``.
        mode: ``"enforce"`` (default) or ``"audit"``.
        components: the components, in file order.
        path: the file's path when loaded from a file (bundle paths resolve against its directory).
    """

    name: str
    digest: str
    version: int
    trust_domain: TrustDomain
    federation: tuple[Federation, ...]
    actions: frozenset[str]
    identities: tuple[IdentityTemplate, ...]
    tenancy: Tenancy
    mode: Mode
    components: tuple[ComponentSpec, ...]
    path: str | None = None

    def rules(self) -> tuple[Rule, ...]:
        """Every rule, component by component, allows before denies."""
        return tuple(r for c in self.components for r in (*c.allow, *c.deny))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may ``source`` do ``action`` on ``target``?". A value; never raised.

    Attributes:
        allowed: whether the request may proceed (in audit mode also when ``would_deny``).
        code: a stable reason code (``"allowed"`` or a deny code; in audit mode the would-be deny code).
        reason: a sentence for humans.
        rule: the rule that decided, e.g. ``"components.training.allow.data-store"``, else ``None``.
        policy_digest: sha256 of the policy file this came from (``""`` when no policy was consulted).
        mode: ``"enforce"`` or ``"audit"``.
        would_deny: audit mode allowed what enforce mode would deny.
        source: the source's identity, ``None`` when it was not a usable SPIFFE ID.
        target: the target component (as given when it named no component).
        action: the action, as given.
        target_tenant: the target's tenant when known.
    """

    allowed: bool
    code: str
    reason: str
    rule: str | None = None
    policy_digest: str = ""
    mode: str = "enforce"
    would_deny: bool = False
    source: Identity | None = None
    target: str = ""
    action: str = ""
    target_tenant: str | None = None

    @classmethod
    def deny(
        cls,
        code: str,
        reason: str,
        *,
        policy_digest: str = "",
        mode: str = "enforce",
        source: Identity | None = None,
        target: str = "",
        action: str = "",
        rule: str | None = None,
        target_tenant: str | None = None,
    ) -> "Decision":
        """A deny, for enforcement points that cannot reach a decision (no peer, no policy, a bug)."""
        return cls(False, code, reason, rule, policy_digest, mode, False, source, target, action, target_tenant)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (identities as strings)."""
        src = self.source
        return {
            "allowed": self.allowed,
            "code": self.code,
            "reason": self.reason,
            "rule": self.rule,
            "policy_digest": self.policy_digest,
            "mode": self.mode,
            "would_deny": self.would_deny,
            "source": None if src is None else str(src.spiffe_id),
            "source_component": None if src is None else src.component,
            "source_tenant": None if src is None else src.tenant,
            "target": self.target,
            "target_tenant": self.target_tenant,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """How a decision was reached, step by step (for ``ztid policy explain``).

    Attributes:
        decision: the decision itself.
        source: the source as given (stringified).
        template: the identity template that matched, or ``None``.
        captures: what that template captured.
        templates_tried: the templates tried before a match (or all of them).
        rule: the deciding rule's location, or ``None``.
        rule_line: that rule's line in the policy file (0 when none).
        steps: the checks made, in order, one sentence each.
    """

    decision: Decision
    source: str
    template: str | None = None
    captures: dict[str, str] = field(default_factory=dict)
    templates_tried: tuple[str, ...] = ()
    rule: str | None = None
    rule_line: int = 0
    steps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "decision": self.decision.to_dict(),
            "source": self.source,
            "template": self.template,
            "captures": dict(self.captures),
            "templates_tried": list(self.templates_tried),
            "rule": self.rule,
            "rule_line": self.rule_line,
            "steps": list(self.steps),
        }
