"""Verify a peer's presented chain against its own trust domain's bundle, then authorize it.

Shared by :mod:`ztid.enforce.tls`, :mod:`ztid.enforce.tls_asyncio` and :mod:`ztid.enforce.grpc`, so
every transport follows the same three steps (verify, identify, decide) and fails closed the same
way: a chain that does not verify is a :class:`~ztid.errors.TransportError`, a policy deny or an
unexpected server a :class:`~ztid.errors.PermissionDenied` carrying its Decision.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ztid.errors import PermissionDenied, SvidError, TransportError, ZtidError
from ztid.spiffeid import SpiffeId
from ztid.svid import VerifiedSvid, verify_x509_svid

if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import BundleSet
    from ztid.identity import Identity
    from ztid.policy import Decision, Policy

__all__ = ["PeerAuthorizer", "PolicyLike", "Verdict", "admit", "authorize_inbound", "authorize_outbound", "expect_server", "identify", "resolve_policy"]

_CACHE_TTL = 300.0  # seconds a verified chain is trusted without re-running path validation

PolicyLike = Any  # a Policy, or a PolicyWatcher (anything with ``.current``)


def resolve_policy(policy: PolicyLike) -> "Policy":
    """The policy in force now: ``policy.current`` for a watcher, else ``policy`` itself."""
    current = getattr(policy, "current", None)
    return policy if current is None else current


class _Entry:
    __slots__ = ("bundles", "svid", "not_before", "not_after", "expires")

    def __init__(self, bundles: "BundleSet", svid: VerifiedSvid, not_before: dt.datetime, not_after: dt.datetime) -> None:
        self.bundles = bundles  # keeps id(bundles) from being reused while the entry lives
        self.svid = svid
        self.not_before = not_before.timestamp()  # POSIX seconds: compared with time.time() per hit
        self.not_after = not_after.timestamp()
        self.expires = time.monotonic() + _CACHE_TTL


class PeerAuthorizer:
    """Verification with a small cache, identification and the policy decision for one endpoint.

    The cache key is the leaf (DER) and the *identity* of the bundle set its chain was verified
    against: a rotated bundle set is a new object, so a removed CA is never served from the cache.
    Keying by the leaf is sound because the leaf is what the handshake authenticated (the peer
    proved its key) and a path from it to its own domain's bundle was found earlier; the entry keeps
    that path's validity window, and a hit outside it (or older than five minutes) verifies afresh.
    """

    def __init__(self, *, maxsize: int = 1024) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, bytes], _Entry] = OrderedDict()
        self._maxsize = maxsize
        self._anchors: tuple[Any, dict[Any, frozenset[bytes]]] | None = None
        self._ids: dict[tuple[int, SpiffeId], tuple[Any, "Identity"]] = {}

    def identify(self, policy: "Policy", spiffe_id: SpiffeId) -> "Identity":
        """:func:`identify`, remembered per policy object (a reloaded policy is a new object)."""
        key = (id(policy), spiffe_id)
        hit = self._ids.get(key)
        if hit is not None and hit[0] is policy:
            return hit[1]
        ident = identify(policy, spiffe_id)
        if len(self._ids) >= self._maxsize:
            self._ids.clear()
        self._ids[key] = (policy, ident)
        return ident

    def _anchor_ders(self, bundles: "BundleSet") -> dict[Any, frozenset[bytes]]:
        held = self._anchors
        if held is None or held[0] is not bundles:
            ders = {td: frozenset(ca.public_bytes(serialization.Encoding.DER) for ca in b.x509_authorities) for td, b in bundles.items()}
            held = (bundles, ders)
            self._anchors = held
        return held[1]

    def cached(self, leaf_der: bytes, bundles: "BundleSet") -> VerifiedSvid | None:
        """The earlier verification of this leaf against this very bundle set, if still valid now."""
        entry = self._cache.get((id(bundles), leaf_der))
        if entry is None or entry.bundles is not bundles or time.monotonic() >= entry.expires:
            return None
        return entry.svid if entry.not_before <= time.time() < entry.not_after else None

    def verify(self, chain_der: Sequence[bytes], bundles: "BundleSet") -> VerifiedSvid:
        """Verify ``chain_der`` (leaf first, as presented) against the leaf ID's own trust domain.

        Raises:
            TransportError: no certificate, or the chain does not verify (``__cause__`` is the SvidError).
        """
        if not chain_der:
            raise TransportError("peer presented no certificate")
        chain = tuple(chain_der)
        hit = self.cached(chain[0], bundles)
        if hit is not None:
            return hit
        now = dt.datetime.now(dt.timezone.utc)
        try:
            certs = [x509.load_der_x509_certificate(der) for der in chain]
        except ValueError as exc:
            raise TransportError(f"peer certificate rejected: unparseable certificate ({exc})") from exc
        try:
            svid = verify_x509_svid(certs, bundles, at=now)
        except SvidError as exc:
            raise TransportError(f"peer certificate rejected: {exc}") from exc
        not_before = max(c.not_valid_before_utc for c in certs)
        not_after = min(c.not_valid_after_utc for c in certs)
        with self._lock:
            self._cache[(id(bundles), chain[0])] = _Entry(bundles, svid, not_before, not_after)
            while len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return svid

    def check_anchor(self, verified_chain_der: Sequence[bytes] | None, svid: VerifiedSvid, bundles: "BundleSet") -> None:
        """Check that OpenSSL's own path ended at an authority of the peer ID's trust domain.

        A second, independent guard against the cross-trust-domain forgery: the handshake's chain
        must anchor in the bundle of the ID's own domain, not in whichever bundle happened to match.

        Raises:
            TransportError: the handshake's trust anchor belongs to another trust domain.
        """
        if not verified_chain_der:
            return
        if verified_chain_der[-1] not in self._anchor_ders(bundles).get(svid.spiffe_id.trust_domain, frozenset()):
            raise TransportError(
                f"peer certificate rejected: {svid.spiffe_id} chains to an authority outside the bundle of "
                f"trust domain {svid.spiffe_id.trust_domain.name!r}"
            )


def identify(policy: "Policy", spiffe_id: SpiffeId) -> "Identity":
    """Map ``spiffe_id`` through the policy's templates (unmapped on any error: fail closed later)."""
    try:
        return policy.identify(spiffe_id)
    except ZtidError:
        from ztid.identity import Identity

        return Identity.unmapped(spiffe_id)


def admit(policy: "Policy", peer: "Identity", target: "Identity", action: str | None) -> "Decision":
    """Decide whether ``peer`` may open a connection to ``target``.

    With ``action`` set, that action is decided. With ``None`` the connection is admitted when the
    policy allows the peer *some* action on the target; each request is then checked by
    :func:`ztid.require` inside the handler. Never raises: a failure is a deny.
    """
    try:
        if action is not None:
            return policy.decide(peer, target, action)
        first: Decision | None = None
        for act in sorted(policy.actions):
            decision = policy.decide(peer, target, act)
            if decision.allowed:
                return decision
            first = first or decision
        if first is not None:
            return first
    except Exception as exc:  # an enforcement point that cannot decide answers deny
        from ztid.policy import Decision

        return Decision.deny("internal_error", f"policy evaluation failed: {type(exc).__name__}: {exc}",
                             policy_digest=getattr(policy, "digest", ""), source=peer)
    from ztid.policy import Decision

    return Decision.deny("unknown_action", "the policy defines no actions", policy_digest=getattr(policy, "digest", ""), source=peer,
                         target=str(target.component))


def expect_server(policy: "Policy", server: "Identity", expect: str | SpiffeId) -> None:
    """Check, on the client side, that the server is who the caller meant to reach.

    Raises:
        PermissionDenied: the server's ID (or its component) is not ``expect``; code ``unexpected_peer``.
    """
    if isinstance(expect, SpiffeId):
        if server.spiffe_id == expect:
            return
        wanted = str(expect)
    else:
        if server.component == expect and server.trust_domain in _policy_domains(policy):
            return
        wanted = f"component {expect!r}"
    from ztid.policy import Decision

    decision = Decision.deny(
        "unexpected_peer",
        f"server is {server.spiffe_id} (component {server.component!r}), expected {wanted}",
        policy_digest=getattr(policy, "digest", ""),
        source=server,
        target=str(expect),
    )
    raise PermissionDenied(decision)


def _policy_domains(policy: "Policy") -> Any:
    domains = getattr(policy, "trust_domains", None)
    return domains if domains else frozenset([policy.trust_domain])


class Verdict:
    """What an authorized handshake established: the verified SVID, the peer's Identity, the Decision."""

    __slots__ = ("svid", "peer", "decision")

    def __init__(self, svid: VerifiedSvid, peer: "Identity", decision: "Decision | None") -> None:
        self.svid = svid
        self.peer = peer
        self.decision = decision


def authorize_inbound(
    authz: PeerAuthorizer,
    svid: VerifiedSvid,
    snapshot: Any,
    policy_like: PolicyLike,
    action: str | None,
) -> Verdict:
    """Server side: map the verified client and decide ``action`` (or any action) on this workload.

    Raises:
        PermissionDenied: the policy denies the client (``.decision`` says why).
    """
    policy = resolve_policy(policy_like)
    peer = authz.identify(policy, svid.spiffe_id)
    me = authz.identify(policy, snapshot.svid.spiffe_id)
    decision = admit(policy, peer, me, action)
    if not decision.allowed:
        raise PermissionDenied(decision)
    return Verdict(svid, peer, decision)


def authorize_outbound(
    authz: PeerAuthorizer,
    svid: VerifiedSvid,
    snapshot: Any,
    policy_like: PolicyLike,
    expect: str | SpiffeId,
    action: str | None,
) -> Verdict:
    """Client side: check the verified server is ``expect`` and (with ``action``) that we may do it.

    Raises:
        PermissionDenied: the server is not ``expect`` (code ``unexpected_peer``), or the policy denies
            this workload ``action`` on it.
    """
    policy = resolve_policy(policy_like)
    server = authz.identify(policy, svid.spiffe_id)
    expect_server(policy, server, expect)
    decision = None
    if action is not None:
        me = authz.identify(policy, snapshot.svid.spiffe_id)
        try:
            decision = policy.decide(me, server, action)
        except Exception as exc:  # cannot decide: deny
            from ztid.policy import Decision

            decision = Decision.deny("internal_error", f"policy evaluation failed: {exc}", source=me)
        if not decision.allowed:
            raise PermissionDenied(decision)
    return Verdict(svid, server, decision)
