"""Envoy ext_authz, pure: a CheckRequest becomes (peer, target, action), a Decision, a CheckResponse.

No gRPC here (the server in :mod:`ztid.sidecar` wraps :meth:`ExtAuthz.check`). The peer comes from
the source principal, its certificate and (when configured) XFCC, in the trust order of
:mod:`ztid.enforce.extauthz_peer`; every failure is a deny with a stable reason code
(:mod:`ztid.enforce.extauthz_codes`; the table is in docs/extauthz-mapping.md).

Target and action come from the route's ``context_extensions`` (``ztid.target``, ``ztid.action``),
else the destination principal's component, else the configured ``routes``; never from request
headers. The default action is ``read`` for GET/HEAD/OPTIONS and ``write`` otherwise.
"""

from __future__ import annotations

import json.encoder
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from envoy.service.auth.v3 import external_auth_pb2

from ztid.audit.ids import new_decision_id
from ztid.enforce.extauthz_codes import (
    AUDIT_LOG_FAILED,
    CALLER_NOT_ALLOWED,
    INTERNAL_ERROR,
    MALFORMED_REQUEST,
    NO_POLICY,
    NO_TARGET,
    REASON_CODES,
    Deny,
)
from ztid.enforce.extauthz_config import ExtAuthzConfig, Route, default_action, normal_path
from ztid.enforce.extauthz_peer import XFCC_HEADER, PeerIdentifier
from ztid.enforce.extauthz_response import STATIC_DENY, ResponseTemplate, allowed_response, denied_response
from ztid.errors import ZtidError
from ztid.policy import Decision
from ztid.spiffeid import SpiffeId

__all__ = ["CALLER_NOT_ALLOWED", "REASON_CODES", "CheckOutcome", "ExtAuthz", "ExtAuthzConfig", "Route", "default_action"]

_log = logging.getLogger("ztid.extauthz")

_ZTID_HEADER_PREFIX: Final = "x-ztid-"
_SET: Final = frozenset(("x-ztid-peer", "x-ztid-component", "x-ztid-decision-id"))
_CACHE_LIMIT: Final = 4096
# Denies that depend on more than the request (no policy yet, our own failure): never replayed from a plan.
_UNPLANNED: Final = frozenset({NO_POLICY, INTERNAL_ERROR, AUDIT_LOG_FAILED})
_quote: Final = json.encoder.encode_basestring_ascii  # what the decision log's canonical JSON writes for a str


class _Plan:
    """What a Check with one set of decision inputs comes to, replayed for the same inputs.

    Valid only for the same policy and bundle set objects and inside the validity window of the
    certificates that were verified for it (a plan never outlives a certificate's notAfter).
    """

    __slots__ = ("policy", "bundles", "not_before", "not_after", "decision", "prepared", "template")

    def __init__(self, policy: Any, bundles: Any, window: list[float], decision: Decision, prepared: Any,
                 template: ResponseTemplate) -> None:
        self.policy, self.bundles = policy, bundles
        self.not_before, self.not_after = window
        self.decision, self.prepared, self.template = decision, prepared, template


class CheckOutcome:
    """What one Check produced (read-only).

    Attributes:
        decision: the Decision (a deny with one of :data:`REASON_CODES` when no policy decision was reached).
        decision_id: the id written to the decision log and sent to Envoy.
        response: the CheckResponse for Envoy.
        wire: the same CheckResponse serialized (what the server sends); answers from a template
            build only this, and ``response`` is parsed from it on first use.
    """

    __slots__ = ("decision", "decision_id", "_response", "_wire")

    def __init__(self, decision: Decision, decision_id: str, response: external_auth_pb2.CheckResponse | None = None,
                 *, wire: bytes | None = None) -> None:
        assert response is not None or wire is not None
        self.decision, self.decision_id, self._response, self._wire = decision, decision_id, response, wire

    @property
    def response(self) -> external_auth_pb2.CheckResponse:
        if self._response is None:
            assert self._wire is not None
            self._response = external_auth_pb2.CheckResponse.FromString(self._wire)
        return self._response

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            assert self._response is not None
            self._wire = self._response.SerializeToString()
        return self._wire

    def __repr__(self) -> str:
        return f"CheckOutcome(decision={self.decision!r}, decision_id={self.decision_id!r})"


def _resolver(value: Any) -> Callable[[], Any]:
    return value if callable(value) and not hasattr(value, "decide") and not isinstance(value, Mapping) else (lambda: value)


class ExtAuthz:
    """Answers Envoy Check requests from a policy, a bundle set, and an optional decision log.

    The first Check with a given set of decision inputs (principal, certificate, destination,
    context extensions, method, and the path, XFCC header and ``x-ztid-*`` header names where they
    count) runs the whole mapping; the outcome is kept as a plan, and later Checks with the same
    inputs replay it: a new decision id, a new log line, the same decision and answer. A plan is
    dropped when the policy or bundle set changes and never used past a verified certificate's
    validity.

    Args:
        policy: a :class:`ztid.policy.Policy`, or a callable returning the current one (hot reload).
        bundles: a :class:`ztid.BundleSet`, or a callable returning the current one.
        config: the compiled :class:`ExtAuthzConfig`.
        log: a :class:`ztid.audit.decisions.DecisionLog`; every decision is recorded before the answer.
    """

    def __init__(self, policy: Any, bundles: Any, *, config: ExtAuthzConfig | None = None, log: Any = None) -> None:
        self._policy = _resolver(policy)
        self._bundles = _resolver(bundles)
        self.config = config if config is not None else ExtAuthzConfig()
        self._log = log
        # Hot-path caches, each bounded and dropped whenever the object it derives from changes.
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._peers = PeerIdentifier(self.config)
        self._dests: dict[str, tuple[SpiffeId | None, str | None]] = {}  # destination -> (ID, tenant)
        self._dests_owner: Any = None  # the Policy the destination cache was filled from
        self._templates: dict[tuple[int, tuple[str, ...] | None], tuple[Decision, ResponseTemplate]] = {}

    # ------------------------------------------------------------------ entry points
    def check(self, request: Any) -> external_auth_pb2.CheckResponse:
        """The CheckResponse for ``request``. Never raises: any failure is a PERMISSION_DENIED answer."""
        return self.evaluate(request).response

    def evaluate(self, request: Any) -> CheckOutcome:
        """Decide ``request`` and build the answer; never raises."""
        try:
            key = None
            if type(request) is external_auth_pb2.CheckRequest:
                attrs = request.attributes
                http = attrs.request.http
                key = _key(attrs, http, self.config)
                plan = None if key is None else self._plans.get(key)
                if plan is not None and plan.policy is self._policy() and \
                        (plan.bundles is None or plan.bundles is self._bundles()) and \
                        plan.not_before <= time.time() <= plan.not_after:
                    # The replay (the hot path, inlined): a new id and log line, the same decision and answer.
                    if self._log is None:
                        decision_id: str | None = new_decision_id()
                    else:
                        decision_id = self._write(plan.prepared, http)
                        if decision_id is None:
                            return self._unlogged(plan.decision)
                    return CheckOutcome(plan.decision, decision_id, wire=plan.template.wire(decision_id))
            return self._evaluate(request, key)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: deny, never abort the RPC
            _log.exception("ext_authz check failed; denying")
            decision = Decision.deny(INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            decision_id = self._record(decision, "", None) or new_decision_id()  # logged like every decision
            try:
                return CheckOutcome(decision, decision_id, denied_response(decision, decision_id))
            except Exception:  # noqa: BLE001
                return CheckOutcome(decision, decision_id, STATIC_DENY)

    def refuse(self, code: str, reason: str) -> CheckOutcome:
        """A logged deny for a request refused before any mapping (e.g. its caller may not ask)."""
        decision = Decision.deny(code, reason)
        decision_id = self._record(decision, "", None) or new_decision_id()
        return CheckOutcome(decision, decision_id, denied_response(decision, decision_id))

    # ------------------------------------------------------------------ the mapping
    def _evaluate(self, request: Any, key: tuple[Any, ...] | None) -> CheckOutcome:
        policy: Any = None
        bundles: Any = None
        http: Any = None
        headers: Mapping[str, str] = {}
        principal = ""
        peer: SpiffeId | None = None
        target: Any = ""
        action = ""
        window = [float("-inf"), float("inf")]  # narrowed to every verified certificate's validity
        try:
            if not isinstance(request, external_auth_pb2.CheckRequest):
                raise Deny(MALFORMED_REQUEST, f"not a CheckRequest: {type(request).__name__}")
            attrs = request.attributes
            http = attrs.request.http
            headers = _headers(http)
            principal = attrs.source.principal
            policy = self._policy()
            if policy is None:
                raise Deny(NO_POLICY, "no policy loaded")
            if attrs.source.certificate or (self.config.trust_xfcc and XFCC_HEADER in headers):
                bundles = self._bundles()
            peer = self._peers.identify(attrs, headers, bundles, window)
            target, action, tenant = self._target(attrs, http, policy)
            decision = policy.decide(peer, target, action, target_tenant=tenant)
        except Deny as deny:
            source = None
            if peer is not None and policy is not None:
                try:
                    source = policy.identify(peer)
                except ZtidError:
                    source = None
            decision = Decision.deny(
                deny.code, deny.reason, policy_digest=getattr(policy, "digest", ""),
                mode=getattr(policy, "mode", "enforce"), source=source, target=str(target), action=action,
            )
        strip = _strip(headers) if decision.allowed else None
        template = self._template(decision, strip)
        prepared = None
        if self._log is None:
            decision_id: str | None = new_decision_id()
        else:
            prepared = self._prepare(decision, principal)
            decision_id = None if prepared is None else self._write(prepared, http)
        if decision_id is None:
            return self._unlogged(decision)
        if key is not None and decision.code not in _UNPLANNED and policy is not None:
            if len(self._plans) >= _CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = _Plan(policy, bundles, window, decision, prepared, template)
        return CheckOutcome(decision, decision_id, wire=template.wire(decision_id))

    def _unlogged(self, decision: Decision) -> CheckOutcome:
        """The answer when the decision log refused the line: a deny, whatever the decision was."""
        denied = Decision.deny(AUDIT_LOG_FAILED, "the decision could not be logged",
                               policy_digest=decision.policy_digest, mode=decision.mode,
                               source=decision.source, target=decision.target, action=decision.action)
        decision_id = new_decision_id()
        return CheckOutcome(denied, decision_id, denied_response(denied, decision_id))

    def _template(self, decision: Decision, strip: tuple[str, ...] | None) -> ResponseTemplate:
        """The serialized answer for ``decision`` (an OK removing ``strip``, or the 403), built once."""
        key = (id(decision), strip)
        hit = self._templates.get(key)
        if hit is None or hit[0] is not decision:
            if len(self._templates) >= _CACHE_LIMIT:
                self._templates.clear()
            if strip is None:
                template = ResponseTemplate(lambda decision_id: denied_response(decision, decision_id))
            else:
                template = ResponseTemplate(lambda decision_id: allowed_response(decision, decision_id, strip))
            hit = (decision, template)  # holding decision keeps its id() unique
            self._templates[key] = hit
        return hit[1]

    def _prepare(self, decision: Decision, principal: str) -> Any:
        try:
            return self._log.prepare(decision, principal[:2048] or None)
        except Exception:  # noqa: BLE001 - an unlogged decision is never an allow
            _log.exception("decision log line could not be prepared; denying")
            return None

    def _write(self, prepared: Any, http: Any) -> str | None:
        try:
            return self._log.record_prepared(prepared, _http_extra(http))
        except Exception:  # noqa: BLE001 - an unlogged decision is never an allow
            _log.exception("decision log write failed; denying")
            return None

    def _record(self, decision: Decision, principal: str, http: Any) -> str | None:
        if self._log is None:
            return new_decision_id()
        prepared = self._prepare(decision, principal)
        return None if prepared is None else self._write(prepared, http)

    def _target(self, attrs: Any, http: Any, policy: Any) -> tuple[Any, str, str | None]:
        ext = attrs.context_extensions
        target: Any = ext.get("ztid.target") or None
        action: str | None = ext.get("ztid.action") or None
        dest_id, tenant = self._destination(attrs.destination.principal, policy)
        if target is None and dest_id is not None:
            target = dest_id
        if target is None or action is None:
            route = None
            if self.config.routes:
                path = normal_path(http.path)
                if path is None:
                    raise Deny(MALFORMED_REQUEST, "the request path is not in normal form")
                route = self.config.match(http.method, path)
            if route is not None:
                target = target if target is not None else route.target
                action = action if action is not None else route.action
        if target is None:
            raise Deny(NO_TARGET, "no target: no ztid.target context extension, destination SPIFFE ID or route")
        if action is None:
            action = default_action(http.method)
        return target, action, tenant

    def _destination(self, dest: str, policy: Any) -> tuple[SpiffeId | None, str | None]:
        """Envoy's own SPIFFE ID (destination.principal) and its tenant under ``policy``, cached per policy."""
        if policy is not self._dests_owner:
            self._dests, self._dests_owner = {}, policy
        hit = self._dests.get(dest)
        if hit is not None:
            return hit
        dest_id: SpiffeId | None = None
        tenant: str | None = None
        if dest.startswith("spiffe://"):
            try:
                dest_id = SpiffeId.parse(dest)
                tenant = policy.identify(dest_id).tenant
            except ZtidError:
                tenant = None
        if len(self._dests) >= _CACHE_LIMIT:
            self._dests.clear()
        self._dests[dest] = (dest_id, tenant)
        return dest_id, tenant

def _headers(http: Any) -> Mapping[str, str]:
    """Request headers, names lowercased; repeated names joined with ``,`` (as Envoy does).

    Envoy lowercases the ``headers`` map itself, so that map is used as is (no copy) unless the
    filter sent ``header_map`` (``encode_raw_headers``) instead.
    """
    if not http.header_map.headers:
        return http.headers
    out: dict[str, str] = {k.lower(): v for k, v in http.headers.items()}
    for hv in http.header_map.headers:
        name = hv.key.lower()
        value = hv.value or hv.raw_value.decode("utf-8", "replace")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _strip(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Client-sent ``x-ztid-*`` header names other than the three the answer sets (which overwrite)."""
    if _ZTID_HEADER_PREFIX not in "\n".join(headers).lower():
        return ()
    return tuple(sorted({n for n in map(str.lower, headers) if n.startswith(_ZTID_HEADER_PREFIX)} - _SET))


def _plan_key(request: external_auth_pb2.CheckRequest, config: ExtAuthzConfig) -> tuple[Any, ...] | None:
    """Every input of the mapping except the policy, the bundles and the time; None: do not plan."""
    attrs = request.attributes
    return _key(attrs, attrs.request.http, config)


def _key(attrs: Any, http: Any, config: ExtAuthzConfig) -> tuple[Any, ...] | None:
    """:func:`_plan_key` from the request's ``attributes`` and ``attributes.request.http``."""
    if http.HasField("header_map"):
        return None  # raw header maps (encode_raw_headers; rare) always take the whole mapping
    headers = http.headers
    source = attrs.source
    ext = attrs.context_extensions
    return (source.principal, source.certificate, attrs.destination.principal, ext.get("ztid.target", ""),
            ext.get("ztid.action", ""), http.method, http.path if config.routes else "",
            headers.get(XFCC_HEADER) if config.trust_xfcc else None, _strip(headers))


def _http_extra(http: Any) -> bytes:
    """The ``extra`` fields of a Check's log line (what :func:`extra_json` writes for them, built directly)."""
    if http is None:
        return b'"extra":{"enforcer":"extauthz"},'
    return (f'"extra":{{"enforcer":"extauthz","host":{_quote(http.host[:256])},"method":{_quote(http.method)},'
            f'"path":{_quote(http.path[:2048])},"request_id":{_quote(http.id[:128])}}},').encode()
