"""mTLS for asyncio streams: ``start_server`` and ``open_connection`` with SVIDs, peers verified and authorized.

A server::

    async def handle(reader, writer, peer):        # peer: the verified, admitted Identity
        ztid.require("read")                       # the peer is current for this task
        ...

    server = await tls_asyncio.start_server(handle, "127.0.0.1", 8443, source=source, policy=policy)

A client::

    reader, writer, peer = await tls_asyncio.open_connection(
        "127.0.0.1", 8443, source=source, policy=policy, expect="registry")

The checks are those of :mod:`ztid.enforce.tls` (the peer's presented chain re-verified against its
own trust domain's bundle, OpenSSL's anchor checked to be of that domain, then the policy), run
after the handshake and before the handler sees a byte. The server's context follows the source
through its ``sni_callback`` (see :func:`ztid.enforce.tls.server_context`), so rotation needs no restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ztid.enforce._peer import PeerAuthorizer, PolicyLike, authorize_inbound, authorize_outbound
from ztid.enforce._tlsctx import ContextCache, following_context, verified_peer
from ztid.enforce.tls import _client_parts, _reraise
from ztid.errors import TransportError, UsageError, ZtidError
from ztid.spiffeid import SpiffeId

if TYPE_CHECKING:  # pragma: no cover
    from ztid.identity import Identity
    from ztid.source import SvidSource

__all__ = ["open_connection", "start_server"]

_log = logging.getLogger("ztid.enforce.tls")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Identity"], Awaitable[None]]


async def start_server(
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    source: "SvidSource",
    policy: PolicyLike,
    action: str | None = None,
    allow_tls12: bool = False,
    handshake_timeout: float = 10.0,
    on_reject: Callable[[ZtidError, Any], None] | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Serve mTLS on ``host:port`` (or the unix socket ``path``); call ``handler(reader, writer, peer)``.

    Args:
        handler: a coroutine function run once per admitted client, inside ``peer_scope(peer)``.
        source, policy, action, allow_tls12, handshake_timeout, on_reject: as
            :class:`ztid.enforce.tls.Listener`.
        **kwargs: passed to ``asyncio.start_server`` / ``start_unix_server`` (``backlog``, ...).

    Raises:
        UsageError: neither or both of ``port`` and ``path``, or ``ssl=`` given.
        TransportError: the address cannot be bound, or the SVID cannot be loaded.
        SourceError: the source cannot serve.
    """
    if (path is None) == (port is None):
        raise UsageError("give either host/port or path, exactly one of them")
    if "ssl" in kwargs:
        raise UsageError("ssl= is built by ztid from the source; do not pass it")
    contexts = ContextCache(source, server_side=True, allow_tls12=allow_tls12)
    ssl_ctx = following_context(contexts)
    authz = PeerAuthorizer()
    reject = on_reject or (lambda exc, addr: _log.warning("ztid: refused connection from %s: %s", addr or "unix peer", exc))

    async def _on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, snap = contexts.current()
            svid = verified_peer(authz, writer.get_extra_info("ssl_object"), snap.bundles)
            verdict = authorize_inbound(authz, svid, snap, policy, action)
        except Exception as exc:  # fail closed: nothing but an authorized peer reaches the handler
            writer.close()
            err = exc if isinstance(exc, ZtidError) else TransportError(f"cannot authorize the peer: {type(exc).__name__}: {exc}")
            reject(err, writer.get_extra_info("peername"))
            return
        from ztid.enforce.require import peer_scope

        with peer_scope(verdict.peer):
            await handler(reader, writer, verdict.peer)

    try:
        if path is not None:
            return await asyncio.start_unix_server(_on_connect, os.fspath(path), ssl=ssl_ctx, ssl_handshake_timeout=handshake_timeout, **kwargs)
        return await asyncio.start_server(_on_connect, host, port, ssl=ssl_ctx, ssl_handshake_timeout=handshake_timeout, **kwargs)
    except OSError as exc:
        raise TransportError(f"cannot listen on {path or (host, port)!r}: {exc}") from exc


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    source: "SvidSource",
    policy: PolicyLike,
    expect: str | SpiffeId,
    action: str | None = None,
    allow_tls12: bool = False,
    timeout: float | None = 10.0,
    **kwargs: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, "Identity"]:
    """Connect with mTLS; return ``(reader, writer, server)`` once the server proved to be ``expect``.

    Args:
        expect: the server's component (in one of the policy's trust domains) or its SpiffeId.
        action: also require the policy to allow this workload ``action`` on the server.
        timeout: seconds for connect and handshake.
        **kwargs: passed to ``asyncio.open_connection`` / ``open_unix_connection``.

    Raises:
        UsageError: neither or both of ``port`` and ``path``.
        TransportError: cannot connect, the handshake failed, or the server's chain does not verify.
        PermissionDenied: the server is not ``expect`` or the policy denies ``action``.
        SourceError: the source cannot serve.
    """
    if (path is None) == (port is None):
        raise UsageError("give either host/port or path, exactly one of them")
    contexts, authz = _client_parts(source, allow_tls12)
    ctx, snap = contexts.current()
    try:
        if path is not None:
            coro = asyncio.open_unix_connection(os.fspath(path), ssl=ctx, server_hostname="", **kwargs)
        else:
            coro = asyncio.open_connection(host, port, ssl=ctx, **kwargs)
        reader, writer = await asyncio.wait_for(coro, timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise TransportError(f"cannot connect to {path or (host, port)!r}: {exc}") from exc
    try:
        svid = verified_peer(authz, writer.get_extra_info("ssl_object"), snap.bundles)
        verdict = authorize_outbound(authz, svid, snap, policy, expect, action)
    except BaseException as exc:
        writer.close()
        _reraise(exc)
    return reader, writer, verdict.peer
