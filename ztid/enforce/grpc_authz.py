"""gRPC server interceptors: verify the caller's SVID from the auth context, decide per method, set the peer.

For every call, before the handler runs:

1. read the client certificate (``x509_pem_cert``, plus ``x509_pem_cert_chain`` when gRPC gives it)
   from ``context.auth_context()``;
2. verify it with :func:`ztid.verify_x509_svid` against the bundle of the ID's **own** trust domain
   (gRPC's own check used the union of anchors, a first filter only);
3. map it to an Identity and decide the method's action on this workload's component;
4. abort with ``UNAUTHENTICATED`` (no or unverifiable certificate) or ``PERMISSION_DENIED`` (policy
   deny), the reason in the details; else run the handler inside ``peer_scope(peer)`` so
   :func:`ztid.require` sees the caller.

Method → action: ``method_actions`` maps a full method (``/pkg.Service/Method``) or a bare method name
to an action; otherwise a unary-request method named ``Get*`` or ``List*`` is ``read`` and every other
method ``write``. Verifications are cached by the caller's leaf and the bundle set they were checked
against, so the per-call cost is a dict lookup plus the policy's (cached) decision.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from ztid.enforce._peer import PeerAuthorizer, PolicyLike, authorize_inbound
from ztid.errors import PermissionDenied, TransportError, ZtidError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.identity import Identity
    from ztid.source import SvidSource

__all__ = ["AioAuthzInterceptor", "AuthzInterceptor", "default_action"]

_END = b"-----END CERTIFICATE-----"


def default_action(method: str, *, request_streaming: bool = False) -> str:
    """``read`` for a unary-request ``Get*``/``List*`` method, ``write`` for anything else."""
    name = method.rsplit("/", 1)[-1]
    return "read" if not request_streaming and name.startswith(("Get", "List")) else "write"


def _pem_to_der_list(blob: bytes) -> list[bytes]:
    out: list[bytes] = []
    for part in blob.split(_END):
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            try:
                out.append(ssl.PEM_cert_to_DER_cert((part[start:] + _END).decode("ascii")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise TransportError(f"peer certificate rejected: malformed PEM in the gRPC auth context ({exc})") from exc
    return out


def presented_chain(auth_context: Mapping[str, Any]) -> list[bytes]:
    """The client's chain (DER, leaf first) from a gRPC auth context; ``[]`` when it sent none.

    Raises:
        TransportError: a certificate in the auth context is not well-formed PEM.
    """
    chain = auth_context.get("x509_pem_cert_chain") or []
    leaf = auth_context.get("x509_pem_cert") or []
    ders = _pem_to_der_list(b"".join(chain)) if chain else []
    leaf_der = _pem_to_der_list(b"".join(leaf))[:1] if leaf else []
    if leaf_der and (not ders or ders[0] != leaf_der[0]):
        ders = leaf_der + [d for d in ders if d != leaf_der[0]]
    return ders


class _Authz:
    def __init__(self, policy: PolicyLike, source: "SvidSource", method_actions: Mapping[str, str] | None) -> None:
        self._policy = policy
        self._source = source
        self._actions = dict(method_actions or {})
        self._authz = PeerAuthorizer()

    def action(self, method: str, request_streaming: bool) -> str:
        act = self._actions.get(method) or self._actions.get(method.rsplit("/", 1)[-1])
        return act if act is not None else default_action(method, request_streaming=request_streaming)

    def check(self, context: Any, action: str) -> tuple["Identity | None", grpc.StatusCode, str]:
        try:
            snap = self._source.snapshot()
            svid = self._authz.verify(presented_chain(context.auth_context()), snap.bundles)
            verdict = authorize_inbound(self._authz, svid, snap, self._policy, action)
            return verdict.peer, grpc.StatusCode.OK, ""
        except PermissionDenied as exc:
            return None, grpc.StatusCode.PERMISSION_DENIED, f"ztid: {exc.decision.code}: {exc.decision.reason}"
        except TransportError as exc:
            return None, grpc.StatusCode.UNAUTHENTICATED, f"ztid: {exc}"
        except ZtidError as exc:
            return None, grpc.StatusCode.PERMISSION_DENIED, f"ztid: cannot authorize: {exc}"
        except Exception as exc:  # an enforcement point that cannot decide denies
            return None, grpc.StatusCode.PERMISSION_DENIED, f"ztid: internal error: {type(exc).__name__}"


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> grpc.RpcMethodHandler:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(wrap(behavior), request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    return handler


class AuthzInterceptor(grpc.ServerInterceptor):
    """Per-method authorization for a sync ``grpc.server`` (see the module docstring).

    Args:
        policy: a Policy or PolicyWatcher.
        source: this server's SVID source (its bundles verify callers; its ID names the target component).
        method_actions: method (full or bare name) → action, overriding the Get*/List* default.
    """

    def __init__(self, policy: PolicyLike, source: "SvidSource", *, method_actions: Mapping[str, str] | None = None) -> None:
        self._z = _Authz(policy, source, method_actions)

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        action = self._z.action(handler_call_details.method, handler.request_streaming)
        z = self._z

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            from ztid.enforce.require import peer_scope

            if handler.response_streaming:

                def streaming(request: Any, context: Any) -> Any:
                    peer, code, details = z.check(context, action)
                    if peer is None:
                        context.abort(code, details)
                    with peer_scope(peer):
                        yield from behavior(request, context)

                return streaming

            def unary(request: Any, context: Any) -> Any:
                peer, code, details = z.check(context, action)
                if peer is None:
                    context.abort(code, details)
                with peer_scope(peer):
                    return behavior(request, context)

            return unary

        return _rewrap(handler, wrap)


class AioAuthzInterceptor(grpc.aio.ServerInterceptor):
    """Per-method authorization for a ``grpc.aio.server``; arguments as :class:`AuthzInterceptor`."""

    def __init__(self, policy: PolicyLike, source: "SvidSource", *, method_actions: Mapping[str, str] | None = None) -> None:
        self._z = _Authz(policy, source, method_actions)

    async def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        action = self._z.action(handler_call_details.method, handler.request_streaming)
        z = self._z

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            from ztid.enforce.require import peer_scope

            if inspect.isasyncgenfunction(behavior):

                async def agen(request: Any, context: Any) -> Any:
                    peer, code, details = z.check(context, action)
                    if peer is None:
                        await context.abort(code, details)
                    with peer_scope(peer):
                        async for item in behavior(request, context):
                            yield item

                return agen

            async def call(request: Any, context: Any) -> Any:
                peer, code, details = z.check(context, action)
                if peer is None:
                    await context.abort(code, details)
                with peer_scope(peer):
                    result = behavior(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    return result

            return call

        return _rewrap(handler, wrap)
