"""Envoy ext_authz, pure: a CheckRequest becomes (peer, target, action), a Decision, a CheckResponse.

No gRPC here (the server in :mod:`ztid.sidecar` wraps :meth:`ExtAuthz.check`). Trust order for the
peer, each step failing closed with a stable reason code (the table is in docs/extauthz-mapping.md):

1. ``attributes.source.principal``: must be a ``spiffe://`` ID (Envoy falls back to a DNS SAN or the
   Subject when the certificate has no URI SAN, so anything else is ``peer_not_spiffe``);
2. ``attributes.source.certificate`` when present (URL-encoded PEM): re-verified against the bundle
   of its own trust domain and required to name the principal;
3. XFCC only with ``trust_xfcc``: only its last element, only when its ``By`` is the configured
   proxy, only over an mTLS hop whose principal is that proxy or the XFCC client itself, exactly one
   ``URI``, ``Chain``/``Cert`` re-verified and ``Hash`` checked against the certificate when present.

Target and action come from the route's ``context_extensions`` (``ztid.target``, ``ztid.action``),
else the destination principal's component, else the configured ``routes``; never from request
headers. The default action is ``read`` for GET/HEAD/OPTIONS and ``write`` otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2

from ztid.audit.decisions import new_decision_id
from ztid.enforce.extauthz_config import ExtAuthzConfig, Route, default_action, normal_path
from ztid.enforce.extauthz_response import STATIC_DENY, allowed_response, denied_response
from ztid.enforce.xfcc import XfccElement, parse_xfcc
from ztid.errors import IdentityError, ZtidError
from ztid.policy import Decision
from ztid.spiffeid import SpiffeId

__all__ = ["REASON_CODES", "CheckOutcome", "ExtAuthz", "ExtAuthzConfig", "Route", "default_action"]

_log = logging.getLogger("ztid.extauthz")

# Stable reason codes of this enforcement point (besides the policy's own decision codes).
NO_PEER: Final = "no_peer"
PEER_NOT_SPIFFE: Final = "peer_not_spiffe"
MALFORMED_IDENTITY: Final = "malformed_identity"
PEER_CERTIFICATE_INVALID: Final = "peer_certificate_invalid"
PEER_CERTIFICATE_MISSING: Final = "peer_certificate_missing"
PEER_MISMATCH: Final = "peer_mismatch"
XFCC_MALFORMED: Final = "xfcc_malformed"
XFCC_UNTRUSTED: Final = "xfcc_untrusted"
XFCC_BAD_URI: Final = "xfcc_bad_uri"
XFCC_CERTIFICATE_INVALID: Final = "xfcc_certificate_invalid"
XFCC_HASH_MISMATCH: Final = "xfcc_hash_mismatch"
XFCC_MISMATCH: Final = "xfcc_mismatch"
NO_TARGET: Final = "no_target"
MALFORMED_REQUEST: Final = "malformed_request"
NO_POLICY: Final = "no_policy"
AUDIT_LOG_FAILED: Final = "audit_log_failed"
INTERNAL_ERROR: Final = "internal_error"
CALLER_NOT_ALLOWED: Final = "caller_not_allowed"
REASON_CODES: Final = frozenset({
    NO_PEER, PEER_NOT_SPIFFE, MALFORMED_IDENTITY, PEER_CERTIFICATE_INVALID, PEER_CERTIFICATE_MISSING, PEER_MISMATCH,
    XFCC_MALFORMED, XFCC_UNTRUSTED, XFCC_BAD_URI, XFCC_CERTIFICATE_INVALID, XFCC_HASH_MISMATCH, XFCC_MISMATCH,
    NO_TARGET, MALFORMED_REQUEST, NO_POLICY, AUDIT_LOG_FAILED, INTERNAL_ERROR, CALLER_NOT_ALLOWED,
})

_XFCC: Final = "x-forwarded-client-cert"
_ZTID_HEADER_PREFIX: Final = "x-ztid-"
_SET_HEADERS: Final = ("x-ztid-peer", "x-ztid-component", "x-ztid-decision-id")
_SET: Final = frozenset(_SET_HEADERS)
_CACHE_LIMIT: Final = 4096
_ID_LEN: Final = 32  # new_decision_id(): 32 hex digits
_ID_SLOT: Final = "~" * _ID_LEN  # placeholder in serialized OK templates; "~" is in no SPIFFE ID or hex id
_ID_SLOT_BYTES: Final = _ID_SLOT.encode()


class _Deny(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class CheckOutcome:
    """What one Check produced (read-only).

    Attributes:
        decision: the Decision (a deny with one of :data:`REASON_CODES` when no policy decision was reached).
        decision_id: the id written to the decision log and sent to Envoy.
        response: the CheckResponse for Envoy.
        wire: the same CheckResponse serialized (what the server sends); the allow path builds only
            this, from a pre-serialized template, and ``response`` is parsed from it on first use.
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
        self._cache: dict[str, tuple[SpiffeId, float, float]] = {}  # certificate -> verified ID, validity (epoch s)
        self._cache_owner: Any = None  # the BundleSet the certificate cache was filled from
        self._ids: dict[str, SpiffeId] = {}  # principal text -> parsed ID
        self._dests: dict[str, tuple[SpiffeId | None, str | None]] = {}  # destination -> (ID, tenant)
        self._dests_owner: Any = None  # the Policy the destination cache was filled from
        self._ok: dict[tuple[int, tuple[str, ...]], tuple[Decision, external_auth_pb2.CheckResponse, Any]] = {}

    # ------------------------------------------------------------------ entry points
    def check(self, request: Any) -> external_auth_pb2.CheckResponse:
        """The CheckResponse for ``request``. Never raises: any failure is a PERMISSION_DENIED answer."""
        return self.evaluate(request).response

    def evaluate(self, request: Any) -> CheckOutcome:
        """Decide ``request`` and build the answer; never raises."""
        try:
            return self._evaluate(request)
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
    def _evaluate(self, request: Any) -> CheckOutcome:
        policy: Any = None
        http: Any = None
        headers: Mapping[str, str] = {}
        principal = ""
        peer: SpiffeId | None = None
        target: Any = ""
        action = ""
        try:
            if not isinstance(request, external_auth_pb2.CheckRequest):
                raise _Deny(MALFORMED_REQUEST, f"not a CheckRequest: {type(request).__name__}")
            attrs = request.attributes
            http = attrs.request.http
            headers = _headers(http)
            principal = attrs.source.principal
            policy = self._policy()
            if policy is None:
                raise _Deny(NO_POLICY, "no policy loaded")
            peer = self._peer(attrs, headers)
            target, action, tenant = self._target(attrs, http, policy)
            decision = policy.decide(peer, target, action, target_tenant=tenant)
        except _Deny as deny:
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
        decision_id = self._record(decision, principal, http)
        if decision_id is None:
            decision = Decision.deny(AUDIT_LOG_FAILED, "the decision could not be logged",
                                     policy_digest=decision.policy_digest, mode=decision.mode,
                                     source=decision.source, target=decision.target, action=decision.action)
            decision_id = new_decision_id()
        if not decision.allowed:
            return CheckOutcome(decision, decision_id, denied_response(decision, decision_id))
        return self._allowed(decision, decision_id, headers)

    def _allowed(self, decision: Decision, decision_id: str, headers: Mapping[str, str]) -> CheckOutcome:
        """The OK answer from a template built once per (decision, stripped headers), plus the id.

        The template is kept serialized with a placeholder id of the same length, so an answer is
        the template's bytes with the id spliced in (no message objects built per Check).
        """
        strip = tuple(sorted({n for n in map(str.lower, headers) if n.startswith(_ZTID_HEADER_PREFIX)} - _SET))
        key = (id(decision), strip)
        hit = self._ok.get(key)
        if hit is None or hit[0] is not decision:
            if len(self._ok) >= _CACHE_LIMIT:
                self._ok.clear()
            template = allowed_response(decision, _ID_SLOT, strip)
            parts: Any = tuple(template.SerializeToString().split(_ID_SLOT_BYTES))
            probe = "0" * _ID_LEN
            if len(parts) != 3 or external_auth_pb2.CheckResponse.FromString(
                    parts[0] + probe.encode() + parts[1] + probe.encode() + parts[2]) != allowed_response(decision, probe, strip):
                parts = None  # the placeholder is not exactly the two id fields: build messages instead
            hit = (decision, template, parts)  # holding decision keeps its id() unique
            self._ok[key] = hit
        parts = hit[2]
        if parts is not None and len(decision_id) == _ID_LEN and decision_id.isascii():
            slot = decision_id.encode()
            return CheckOutcome(decision, decision_id, wire=parts[0] + slot + parts[1] + slot + parts[2])
        response = external_auth_pb2.CheckResponse()
        response.CopyFrom(hit[1])
        response.ok_response.headers[2].header.value = decision_id
        response.dynamic_metadata.fields["decision_id"].string_value = decision_id
        return CheckOutcome(decision, decision_id, response)

    def _record(self, decision: Decision, principal: str, http: Any) -> str | None:
        if self._log is None:
            return new_decision_id()
        extra: dict[str, Any] = {"enforcer": "extauthz"}
        if http is not None:
            extra.update(method=http.method, path=http.path[:2048], host=http.host[:256], request_id=http.id[:128])
        try:
            return self._log.record(decision, peer=principal[:2048] or None, extra=extra)
        except Exception:  # noqa: BLE001 - an unlogged decision is never an allow
            _log.exception("decision log write failed; denying")
            return None

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
                    raise _Deny(MALFORMED_REQUEST, "the request path is not in normal form")
                route = self.config.match(http.method, path)
            if route is not None:
                target = target if target is not None else route.target
                action = action if action is not None else route.action
        if target is None:
            raise _Deny(NO_TARGET, "no target: no ztid.target context extension, destination SPIFFE ID or route")
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

    def _peer(self, attrs: Any, headers: Mapping[str, str]) -> SpiffeId:
        principal = attrs.source.principal
        peer = self._principal(principal) if principal else None
        certificate = attrs.source.certificate
        if certificate:
            if peer is None:
                raise _Deny(NO_PEER, "a peer certificate without a principal")
            verified = self._verify(certificate, PEER_CERTIFICATE_INVALID, encoded=True)
            if verified != peer:
                raise _Deny(PEER_MISMATCH, f"peer certificate names {verified}, principal is {peer}")
        elif peer is not None and self.config.require_certificate:
            raise _Deny(PEER_CERTIFICATE_MISSING, "no peer certificate (include_peer_certificate is required)")
        if self.config.trust_xfcc and _XFCC in headers:
            return self._xfcc(headers[_XFCC], peer)
        if peer is None:
            raise _Deny(NO_PEER, "no authenticated peer (no source principal)")
        return peer

    def _principal(self, principal: str) -> SpiffeId:
        hit = self._ids.get(principal)
        if hit is not None:
            return hit
        if not principal.startswith("spiffe://"):
            raise _Deny(PEER_NOT_SPIFFE, "the peer principal is not a SPIFFE ID")
        try:
            parsed = SpiffeId.parse(principal)
        except IdentityError as exc:
            raise _Deny(MALFORMED_IDENTITY, f"the peer principal is not a valid SPIFFE ID: {exc}") from None
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        self._ids[principal] = parsed
        return parsed

    def _xfcc(self, header: str, peer: SpiffeId | None) -> SpiffeId:
        try:
            last: XfccElement = parse_xfcc(header)[-1]
        except ZtidError as exc:
            raise _Deny(XFCC_MALFORMED, str(exc)) from None
        proxy = self.config.proxy_spiffe_id
        if peer is None:
            raise _Deny(XFCC_UNTRUSTED, "XFCC arrived over a hop without mTLS")
        if str(proxy) not in last.by:
            raise _Deny(XFCC_UNTRUSTED, "the last XFCC element was not added by the trusted proxy")
        if len(last.uri) != 1:
            raise _Deny(XFCC_BAD_URI, f"the last XFCC element has {len(last.uri)} URI values, expected exactly 1")
        client = self._principal(last.uri[0])
        if peer != proxy and peer != client:
            raise _Deny(XFCC_MISMATCH, f"the mTLS peer {peer} is neither the trusted proxy nor the XFCC client")
        pem = last.chain or last.cert
        if last.chain is not None and last.cert is not None and _leaf_sha256(last.cert) != _leaf_sha256(last.chain):
            raise _Deny(XFCC_MISMATCH, "the XFCC Cert is not the leaf of its Chain")
        if pem is not None:
            verified = self._verify(pem, XFCC_CERTIFICATE_INVALID)
            if verified != client:
                raise _Deny(XFCC_MISMATCH, f"the XFCC certificate names {verified}, its URI is {client}")
        if last.hash is not None and pem is not None:
            if _leaf_sha256(pem) != last.hash:
                raise _Deny(XFCC_HASH_MISMATCH, "the XFCC Hash does not match its certificate")
        return client

    def _verify(self, text: str, code: str, *, encoded: bool = False) -> SpiffeId:
        """The verified SPIFFE ID of a PEM chain (URL-encoded when ``encoded``), cached until its notAfter."""
        from ztid.svid import verify_x509_svid

        bundles = self._bundles()
        if bundles is not self._cache_owner:
            self._cache, self._cache_owner = {}, bundles
        now_ts = time.time()
        hit = self._cache.get(text)
        if hit is not None and hit[1] <= now_ts <= hit[2]:
            return hit[0]
        now = datetime.fromtimestamp(now_ts, UTC)
        pem = urllib.parse.unquote(text) if encoded else text
        try:
            verified = verify_x509_svid(pem.encode("ascii"), bundles, at=now)
        except (ZtidError, UnicodeEncodeError) as exc:
            raise _Deny(code, f"certificate does not verify: {exc}") from None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[text] = (verified.spiffe_id, verified.leaf.not_valid_before_utc.timestamp(),
                             verified.not_after.timestamp())
        return verified.spiffe_id


def _leaf_sha256(pem: str) -> str:
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode("ascii"))[0]
    except (ValueError, UnicodeEncodeError) as exc:
        raise _Deny(XFCC_CERTIFICATE_INVALID, f"XFCC certificate unreadable: {exc}") from None
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


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
