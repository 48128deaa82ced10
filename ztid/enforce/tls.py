"""mTLS for stdlib sockets: listen/accept and connect with SVIDs, each peer verified and authorized.

A server::

    with tls.listen(("127.0.0.1", 8443), source=source, policy=policy) as listener:
        conn, peer = listener.accept()          # peer: the verified, policy-admitted Identity
        with conn:                              # ztid.require() sees `peer` inside this block
            ztid.require("read")

A client::

    with tls.connect(("127.0.0.1", 8443), source=source, policy=policy, expect="data-store") as conn:
        conn.sendall(b"...")

Each handshake: OpenSSL verifies the peer against the union of all bundles' authorities (a first
filter); then, before any application byte is read or written, ztid takes the peer's chain *as
presented* and re-verifies it with :func:`ztid.verify_x509_svid` against the bundle of the peer
ID's **own** trust domain only, checks that OpenSSL's path ended at an authority of that same
domain, maps the ID to an :class:`~ztid.identity.Identity` and asks the policy. Any failure closes
the connection. Contexts are rebuilt when the source delivers a new snapshot, so rotated SVIDs
and bundles apply to the next handshake without restarting anything. See ``docs/mtls.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ztid.enforce._peer import PeerAuthorizer, PolicyLike, Verdict, authorize_inbound, authorize_outbound
from ztid.enforce._tlsctx import ContextCache, build_context, following_context, verified_peer
from ztid.errors import TransportError, UsageError, ZtidError
from ztid.spiffeid import SpiffeId

if TYPE_CHECKING:  # pragma: no cover
    from ztid.identity import Identity
    from ztid.policy import Decision
    from ztid.source import SvidSource
    from ztid.svid import VerifiedSvid

__all__ = ["Listener", "ZtidSocket", "authorize", "client_context", "connect", "listen", "server_context"]

_log = logging.getLogger("ztid.enforce.tls")
Address = tuple[str, int] | str | os.PathLike[str]


class ZtidSocket(ssl.SSLSocket):
    """An ``ssl.SSLSocket`` whose peer has been verified and authorized by ztid.

    Attributes:
        peer: the peer's Identity (SPIFFE ID, component, tenant).
        peer_svid: the verified chain and ID.
        decision: the Decision that admitted it (server side; client side only with ``action=``).

    On the server side, ``with conn:`` also makes ``peer`` the current peer for
    :func:`ztid.require` until the block ends (the socket is closed on exit, as with any socket).
    """

    peer: "Identity | None" = None
    peer_svid: "VerifiedSvid | None" = None
    decision: "Decision | None" = None
    _ztid_scopes: list[Any] | None = None

    def _ztid_set(self, verdict: Verdict) -> None:
        self.peer, self.peer_svid, self.decision = verdict.peer, verdict.svid, verdict.decision

    def __enter__(self) -> "ZtidSocket":
        if self.server_side and self.peer is not None:
            from ztid.enforce.require import peer_scope

            scope = peer_scope(self.peer)
            scope.__enter__()
            if self._ztid_scopes is None:
                self._ztid_scopes = []
            self._ztid_scopes.append(scope)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            while self._ztid_scopes:
                self._ztid_scopes.pop().__exit__(None, None, None)
        finally:
            self.close()


def _check_address(address: Address) -> None:
    if not isinstance(address, (tuple, str, os.PathLike)):
        raise UsageError(f"address must be (host, port) or a unix socket path, not {address!r}")


def _reraise(exc: BaseException) -> NoReturn:
    """Re-raise ztid errors and interrupts as they are; anything else as a TransportError (fail closed)."""
    if isinstance(exc, (ZtidError, KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
        raise exc
    raise TransportError(f"cannot authorize the peer: {type(exc).__name__}: {exc}") from exc


def _default_on_reject(exc: ZtidError, address: Any) -> None:
    _log.warning("ztid: refused connection from %s: %s", address or "unix peer", exc)


class Listener:
    """A listening socket whose :meth:`accept` returns only verified, authorized mTLS connections.

    Args:
        sock: a bound, listening plain socket (TCP or unix).
        source: this workload's SVID source; each handshake uses its current snapshot.
        policy: a Policy, or a PolicyWatcher (its ``.current`` policy is used per connection).
        action: decide this action on this workload for every client; ``None`` (default) admits a
            client the policy allows *some* action here, leaving each request to ``ztid.require``.
        allow_tls12: accept TLS 1.2 clients too (default TLS 1.3 only).
        handshake_timeout: seconds a client gets to complete the handshake.
        on_reject: called with ``(error, address)`` for every refused client (default: a warning log).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        source: "SvidSource",
        policy: PolicyLike,
        action: str | None = None,
        allow_tls12: bool = False,
        handshake_timeout: float = 10.0,
        on_reject: Callable[[ZtidError, Any], None] | None = None,
    ) -> None:
        self._sock = sock
        self._source = source
        self._policy = policy
        self._action = action
        self._timeout = handshake_timeout
        self._on_reject = on_reject or _default_on_reject
        self._contexts = ContextCache(source, server_side=True, allow_tls12=allow_tls12, sslsocket_class=ZtidSocket)
        self._authz = PeerAuthorizer()

    @property
    def address(self) -> Any:
        """The bound address (``(host, port)`` or the unix socket path)."""
        return self._sock.getsockname()

    @property
    def socket(self) -> socket.socket:
        """The plain listening socket (for selectors, or to accept and hand :meth:`handshake` to a worker)."""
        return self._sock

    def accept(self) -> tuple[ZtidSocket, "Identity"]:
        """Wait for the next client that completes the handshake and is authorized.

        Refused clients are closed before any application byte and reported to ``on_reject``.

        Raises:
            TransportError: the listening socket failed or was closed.
        """
        while True:
            try:
                raw, address = self._sock.accept()
            except OSError as exc:
                raise TransportError(f"listener failed: {exc}") from exc
            try:
                conn = self.handshake(raw)
            except ZtidError as exc:
                self._on_reject(exc, address)
                continue
            assert conn.peer is not None
            return conn, conn.peer

    def handshake(self, raw: socket.socket) -> ZtidSocket:
        """Run the server handshake on an accepted plain socket, then verify and authorize the client.

        Raises:
            TransportError: the handshake failed or the client's chain does not verify.
            PermissionDenied: the policy refuses the client.
            SourceError: this workload's source cannot serve an SVID (fail closed).
        """
        try:
            ctx, snap = self._contexts.current()
            raw.settimeout(self._timeout)
        except BaseException:
            raw.close()
            raise
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            raise TransportError(f"TLS handshake failed: {exc}") from exc
        try:
            svid = verified_peer(self._authz, conn, snap.bundles)
            verdict = authorize_inbound(self._authz, svid, snap, self._policy, self._action)
            conn.settimeout(None)
        except BaseException as exc:
            conn.close()
            _reraise(exc)
        assert isinstance(conn, ZtidSocket)
        conn._ztid_set(verdict)
        return conn

    def close(self) -> None:
        """Close the listening socket (connections already accepted stay open); wakes a blocked accept()."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def listen(
    address: Address,
    *,
    source: "SvidSource",
    policy: PolicyLike,
    action: str | None = None,
    backlog: int = 128,
    allow_tls12: bool = False,
    handshake_timeout: float = 10.0,
    on_reject: Callable[[ZtidError, Any], None] | None = None,
) -> Listener:
    """Bind and listen on ``address`` (``(host, port)``; port 0 picks one; or a unix socket path).

    Raises:
        UsageError: the address is neither a (host, port) pair nor a path.
        TransportError: the address cannot be bound.
    """
    _check_address(address)
    try:
        if isinstance(address, tuple):
            sock = socket.create_server(address, backlog=backlog, reuse_port=False)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(os.fspath(address))
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise TransportError(f"cannot listen on {address!r}: {exc}") from exc
    return Listener(
        sock, source=source, policy=policy, action=action, allow_tls12=allow_tls12, handshake_timeout=handshake_timeout, on_reject=on_reject
    )


_client_state: "weakref.WeakKeyDictionary[Any, dict[bool, tuple[ContextCache, PeerAuthorizer]]]" = weakref.WeakKeyDictionary()


def _client_parts(source: "SvidSource", allow_tls12: bool) -> tuple[ContextCache, PeerAuthorizer]:
    try:
        per_source = _client_state.get(source)
        if per_source is None:
            per_source = _client_state.setdefault(source, {})
    except TypeError:  # not weak-referenceable: no reuse across calls
        per_source = {}
    parts = per_source.get(allow_tls12)
    if parts is None:
        parts = (ContextCache(source, server_side=False, allow_tls12=allow_tls12, sslsocket_class=ZtidSocket), PeerAuthorizer())
        per_source[allow_tls12] = parts
    return parts


def connect(
    address: Address,
    *,
    source: "SvidSource",
    policy: PolicyLike,
    expect: str | SpiffeId,
    action: str | None = None,
    timeout: float | None = 10.0,
    allow_tls12: bool = False,
    server_hostname: str | None = None,
) -> ZtidSocket:
    """Connect with mTLS and return the socket once the server proved to be ``expect``.

    Args:
        address: ``(host, port)`` or a unix socket path.
        source: this workload's SVID source (its current snapshot is used).
        policy: a Policy or PolicyWatcher.
        expect: the server's component (as the policy's templates map it, in one of the policy's
            trust domains) or its exact SpiffeId.
        action: also require the policy to allow this workload ``action`` on the server.
        timeout: seconds for connect and handshake. The returned socket is blocking, as the
            server's side is (a long-lived data connection may idle); ``conn.settimeout()`` sets I/O timeouts.
        allow_tls12: offer TLS 1.2 too (default TLS 1.3 only).
        server_hostname: SNI to send (not used for verification: the SPIFFE ID is).

    Raises:
        TransportError: cannot connect, the handshake failed, or the server's chain does not verify.
        PermissionDenied: the server is not ``expect`` or the policy denies ``action``.
        SourceError: this workload's source cannot serve an SVID.
    """
    _check_address(address)
    contexts, authz = _client_parts(source, allow_tls12)
    ctx, snap = contexts.current()
    try:
        if isinstance(address, tuple):
            raw = socket.create_connection(address, timeout=timeout)
        else:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.settimeout(timeout)
            try:
                raw.connect(os.fspath(address))
            except BaseException:
                raw.close()
                raise
    except OSError as exc:
        raise TransportError(f"cannot connect to {address!r}: {exc}") from exc
    try:
        conn = ctx.wrap_socket(raw, server_side=False, server_hostname=server_hostname)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(f"TLS handshake with {address!r} failed: {exc}") from exc
    try:
        svid = verified_peer(authz, conn, snap.bundles)
        verdict = authorize_outbound(authz, svid, snap, policy, expect, action)
        conn.settimeout(None)
    except BaseException as exc:
        conn.close()
        _reraise(exc)
    assert isinstance(conn, ZtidSocket)
    conn._ztid_set(verdict)
    return conn


def authorize(
    conn: ssl.SSLSocket | ssl.SSLObject, *, source: "SvidSource", policy: PolicyLike, action: str | None = None
) -> Verdict:
    """Verify and authorize the client of a server-side connection made with :func:`server_context`.

    For servers ztid does not run (``socketserver``, ``http.server``, a framework's TLS): call this
    right after the handshake and before reading; close the connection on any error.

    Raises:
        TransportError: the client's chain does not verify against its own trust domain's bundle.
        PermissionDenied: the policy refuses the client.
    """
    try:
        authz, snap = _authorizer_for(source), source.snapshot()
        return authorize_inbound(authz, verified_peer(authz, conn, snap.bundles), snap, policy, action)
    except BaseException as exc:
        _reraise(exc)


_authorizers: "weakref.WeakKeyDictionary[Any, PeerAuthorizer]" = weakref.WeakKeyDictionary()


def _authorizer_for(source: Any) -> PeerAuthorizer:
    try:
        return _authorizers.setdefault(source, PeerAuthorizer())
    except TypeError:
        return PeerAuthorizer()


def server_context(source: "SvidSource", *, allow_tls12: bool = False) -> ssl.SSLContext:
    """A server ``SSLContext`` that follows the source: every handshake uses the current SVID and bundles.

    The returned context swaps itself, per handshake, for the context of the source's current
    snapshot (from its ``sni_callback``, which OpenSSL calls on every ClientHello), so a server
    built on it never needs a restart to rotate. It only *authenticates* against the union of
    anchors: call :func:`authorize` on each connection, or use :func:`listen`, which does.

    Raises:
        SourceError: the source cannot serve.
        TransportError: the SVID or anchors were refused by OpenSSL.
    """
    return following_context(ContextCache(source, server_side=True, allow_tls12=allow_tls12))


def client_context(source: "SvidSource", *, allow_tls12: bool = False) -> ssl.SSLContext:
    """A client ``SSLContext`` from the source's *current* snapshot (build one per connection to rotate).

    It authenticates the server against the union of anchors only: it does not check the server's
    own trust domain nor its identity. Prefer :func:`connect`, which does both.

    Raises:
        SourceError: the source cannot serve.
        TransportError: the SVID or anchors were refused by OpenSSL.
    """
    return build_context(source.snapshot(), server_side=False, allow_tls12=allow_tls12)
