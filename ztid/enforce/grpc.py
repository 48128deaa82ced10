"""gRPC with SVIDs: rotating server credentials, channel credentials, a rotating channel, authz interceptors.

A server (sync; ``grpc.aio`` is the same with :class:`AioAuthzInterceptor`)::

    server = grpc.server(pool, interceptors=[AuthzInterceptor(policy, source)])
    server.add_secure_port("127.0.0.1:50051", server_credentials(source))

A client::

    channel = secure_channel("127.0.0.1:50051", source=source, policy=policy, expect="registry")

**Server credentials rotate**: :func:`server_credentials` uses ``grpc.dynamic_ssl_server_credentials``,
whose fetcher gRPC calls on each new handshake; it returns a new configuration whenever the source's
generation changed, so new connections get the new SVID and bundles without a restart.

**Channel credentials do not rotate**: ``grpc.ssl_channel_credentials`` is fixed at creation. Use
:func:`secure_channel`, which rebuilds its channel when the source delivers a new snapshot (calls in
flight finish on the old channel), or rebuild yours from ``source.subscribe``.

**Checking the server, client side.** gRPC Python offers no hook into the client's certificate
verification and no way to read the server's certificate from a call, and ``ssl_target_name_override``
matches DNS names, not SPIFFE IDs. ztid therefore (1) trusts only the bundle of the *expected server's
own trust domain* in the channel credentials (``trust_domain=``, default this workload's own), so a
server whose chain anchors in any other domain, the cross-domain forgery included, fails the gRPC
handshake itself; and (2) with ``expect=``, verifies the server's SVID and component with a ztid
mTLS probe (:func:`ztid.enforce.tls.connect`) to the same address before each channel is built. The
probe authenticates whoever answers at that address at that moment; it cannot be bound to the
connections gRPC makes later. Authorization of the *caller* is the server's job and is complete.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ztid.enforce._tlsctx import union_pem
from ztid.enforce.grpc_authz import AioAuthzInterceptor, AuthzInterceptor, default_action
from ztid.errors import SourceError, UsageError, ZtidError
from ztid.spiffeid import SpiffeId, TrustDomain

if TYPE_CHECKING:  # pragma: no cover
    from ztid.source import SvidSnapshot, SvidSource

__all__ = [
    "AioAuthzInterceptor",
    "AuthzInterceptor",
    "RotatingChannel",
    "channel_credentials",
    "default_action",
    "secure_channel",
    "server_credentials",
]


def _server_config(snap: "SvidSnapshot") -> Any:
    roots = union_pem(snap.bundles).encode("ascii") or None
    return grpc.ssl_server_certificate_configuration([(snap.svid.key_pem(), snap.svid.chain_pem())], root_certificates=roots)


def server_credentials(source: "SvidSource") -> grpc.ServerCredentials:
    """Server credentials that require a client certificate and follow the source's rotation.

    Client certificates are checked by gRPC against the union of all bundles' authorities (a first
    filter); install :class:`AuthzInterceptor` to verify each caller against its own trust domain's
    bundle and to authorize it.

    Raises:
        SourceError: the source cannot serve.
    """
    snap = source.snapshot()
    state = {"generation": snap.generation}
    lock = threading.Lock()

    def fetch() -> Any:
        try:
            current = source.snapshot()
        except ZtidError:
            return None  # keep the last configuration; the interceptor refuses every call meanwhile
        with lock:
            if current.generation == state["generation"]:
                return None
            state["generation"] = current.generation
        return _server_config(current)

    return grpc.dynamic_ssl_server_credentials(_server_config(snap), fetch, require_client_authentication=True)


def channel_credentials(source: "SvidSource", *, trust_domain: TrustDomain | str | None = None) -> grpc.ChannelCredentials:
    """Channel credentials from the source's current snapshot (they never rotate; see the module docs).

    Args:
        trust_domain: the server's trust domain; only its bundle is trusted. Default: this workload's own.

    Raises:
        SourceError: the source cannot serve, or holds no bundle for ``trust_domain``.
    """
    snap = source.snapshot()
    td = snap.svid.spiffe_id.trust_domain if trust_domain is None else (trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain))
    bundle = snap.bundles.get(td)
    if bundle is None or not bundle.x509_authorities:
        raise SourceError(f"no X.509 trust bundle for the server's trust domain {td.name!r}")
    return grpc.ssl_channel_credentials(
        root_certificates=bundle.to_pem(), private_key=snap.svid.key_pem(), certificate_chain=snap.svid.chain_pem()
    )


def _probe_address(target: str) -> Any:
    if target.startswith("unix:"):
        return target[len("unix:"):].removeprefix("//")
    host, sep, port = target.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(f"cannot probe gRPC target {target!r}: use host:port or unix:PATH")
    return (host.strip("[]"), int(port))


class RotatingChannel(grpc.Channel):
    """A ``grpc.Channel`` that rebuilds its credentials and connection when the source rotates.

    Multi-callables (and stubs) made from it look the current channel up on every call.
    """

    def __init__(self, target: str, *, source: "SvidSource", policy: Any = None, expect: str | SpiffeId | None = None,
                 trust_domain: TrustDomain | str | None = None, server_name: str | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        if expect is not None and policy is None:
            raise UsageError("expect= needs policy= to map the server's SPIFFE ID to a component")
        self._target, self._source, self._policy, self._expect = target, source, policy, expect
        self._td = trust_domain
        name_opt = (("grpc.ssl_target_name_override", server_name),) if server_name else ()
        self._options = tuple(options) + name_opt
        self._lock = threading.Lock()
        self._generation = -1
        self._channel: grpc.Channel | None = None
        self._old: list[grpc.Channel] = []
        self._current()

    def _current(self) -> grpc.Channel:
        snap = self._source.snapshot()
        chan = self._channel
        if chan is not None and snap.generation == self._generation:
            return chan
        with self._lock:
            if self._channel is None or snap.generation != self._generation:
                if self._expect is not None:
                    from ztid.enforce import tls

                    tls.connect(_probe_address(self._target), source=self._source, policy=self._policy, expect=self._expect).close()
                creds = channel_credentials(self._source, trust_domain=self._td)
                if self._channel is not None:
                    self._old.append(self._channel)  # in-flight calls finish; closed with us
                self._channel = grpc.secure_channel(self._target, creds, options=self._options)
                self._generation = snap.generation
            return self._channel

    def _multi(self, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        outer = self

        class _Call:
            def __getattr__(self, name: str) -> Any:
                return getattr(getattr(outer._current(), kind)(method, *args, **kwargs), name)

            def __call__(self, *a: Any, **kw: Any) -> Any:
                return getattr(outer._current(), kind)(method, *args, **kwargs)(*a, **kw)

        return _Call()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._multi("unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._multi("unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._multi("stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._multi("stream_stream", method, args, kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._current().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._current().unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            for chan in [*self._old, *([self._channel] if self._channel is not None else [])]:
                chan.close()
            self._old.clear()
            self._channel = None

    def __enter__(self) -> "RotatingChannel":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def secure_channel(target: str, *, source: "SvidSource", policy: Any = None, expect: str | SpiffeId | None = None,
                   trust_domain: TrustDomain | str | None = None, server_name: str | None = None,
                   options: Sequence[tuple[str, Any]] = ()) -> RotatingChannel:
    """A rotating mTLS channel to ``target`` (``host:port`` or ``unix:PATH``); see :class:`RotatingChannel`.

    Args:
        expect: the server's component or SpiffeId, checked by a ztid mTLS probe before each
            (re)build (needs ``policy``); ``None`` skips the probe.
        trust_domain: the server's trust domain (only its bundle is trusted); default this workload's.
        server_name: a DNS name in the server's SVID (``ssl_target_name_override``). gRPC always
            checks the server certificate against a DNS name (the target's host by default) and
            never against a URI SAN, so a gRPC server's SVID needs a DNS SAN (SPIRE: ``-dns``;
            ``DevCA.issue(dns_names=...)``).

    Raises:
        TransportError: the probe could not reach or verify the server.
        PermissionDenied: the probed server is not ``expect``.
        SourceError: the source cannot serve.
    """
    return RotatingChannel(target, source=source, policy=policy, expect=expect, trust_domain=trust_domain, server_name=server_name,
                           options=options)
