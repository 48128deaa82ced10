"""The key service over gRPC and ztid mTLS: verify the caller's SVID, hand the request to KeyService, map the answer.

Every call: the client certificate chain from the gRPC auth context is verified against the bundle
of its SPIFFE ID's **own** trust domain (gRPC's handshake only checked it against the union of the
source's anchors), mapped to an Identity by the policy, and passed with its ``notAfter`` to
:class:`~ztid.keyd.service.KeyService`. The service's generic authz interceptor is not used: the
decision here is about the *dataset's* target, not about the key service itself.

Status codes: ``UNAUTHENTICATED`` (no or unverifiable certificate), ``PERMISSION_DENIED`` with
``"ztid: <code>: <reason>"`` (policy deny, expired SVID, unknown dataset, a key that does not
unwrap), ``UNAVAILABLE`` (the decision log cannot be written: nothing is released).
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from ztid._proto import keyservice_pb2 as pb
from ztid._proto import keyservice_pb2_grpc as pb_grpc
from ztid.enforce._peer import PeerAuthorizer, identify
from ztid.enforce.grpc import server_credentials
from ztid.enforce.grpc_authz import presented_chain
from ztid.errors import AuditError, PermissionDenied, TransportError, ZtidError
from ztid.keyd.service import Caller, KeyService, Released

if TYPE_CHECKING:  # pragma: no cover
    from ztid.source import SvidSource

__all__ = ["KeyServer", "KeyServicer", "serve"]


def _lease(result: Released) -> pb.Lease:
    return pb.Lease(seconds=result.lease_seconds, not_after_unix=result.lease_not_after.timestamp(),
                    decision_id=result.decision_id)


class KeyServicer(pb_grpc.KeyServiceServicer):
    """gRPC adapter of a :class:`KeyService`; ``source`` is the key service's own SVID source."""

    def __init__(self, service: KeyService, source: "SvidSource") -> None:
        self.service = service
        self._source = source
        self._authz = PeerAuthorizer()

    def _caller(self, context: Any, method: str) -> Caller:
        try:
            chain = presented_chain(context.auth_context())
            svid = self._authz.verify(chain, self._source.snapshot().bundles)
        except ZtidError as exc:
            reason = str(exc)
            try:
                decision_id = self.service.refuse_unauthenticated(method, reason)
            except AuditError:
                context.abort(grpc.StatusCode.UNAVAILABLE, "ztid: decision log unavailable")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"ztid: unauthenticated: {reason} (decision {decision_id})")
        identity = identify(self.service.policy, svid.spiffe_id)
        return Caller(identity, svid.not_after)

    def _run(self, context: Any, method: str, fn: Any) -> Any:
        caller = self._caller(context, method)
        try:
            return fn(caller)
        except PermissionDenied as exc:
            d = exc.decision
            did = getattr(exc, "decision_id", "")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"ztid: {d.code}: {d.reason}" + (f" (decision {did})" if did else ""))
        except AuditError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "ztid: decision log unavailable; no key released")
        except Exception as exc:  # an enforcement point that cannot decide refuses
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"ztid: internal_error: {type(exc).__name__}")

    def NewKey(self, request: pb.NewKeyRequest, context: Any) -> pb.NewKeyResponse:  # noqa: N802 (gRPC names)
        def go(caller: Caller) -> pb.NewKeyResponse:
            r = self.service.new_key(caller, request.dataset, request.target, request.tenant or None)
            return pb.NewKeyResponse(key_id=r.key_id, version=r.version, wrapped_key=r.wrapped_key, data_key=r.data_key,
                                     lease=_lease(r), decision_id=r.decision_id)

        return self._run(context, "NewKey", go)

    def WrapKey(self, request: pb.WrapKeyRequest, context: Any) -> pb.WrapKeyResponse:  # noqa: N802
        def go(caller: Caller) -> pb.WrapKeyResponse:
            r = self.service.wrap_key(caller, request.dataset, request.data_key)
            return pb.WrapKeyResponse(key_id=r.key_id, version=r.version, wrapped_key=r.wrapped_key, decision_id=r.decision_id)

        return self._run(context, "WrapKey", go)

    def UnwrapKey(self, request: pb.UnwrapKeyRequest, context: Any) -> pb.UnwrapKeyResponse:  # noqa: N802
        def go(caller: Caller) -> pb.UnwrapKeyResponse:
            r = self.service.unwrap_key(caller, request.dataset, request.key_id, request.version, request.wrapped_key)
            return pb.UnwrapKeyResponse(data_key=r.data_key, lease=_lease(r), decision_id=r.decision_id)

        return self._run(context, "UnwrapKey", go)

    def RewrapKey(self, request: pb.RewrapKeyRequest, context: Any) -> pb.RewrapKeyResponse:  # noqa: N802
        def go(caller: Caller) -> pb.RewrapKeyResponse:
            r = self.service.rewrap_key(caller, request.dataset, request.key_id, request.version, request.wrapped_key)
            return pb.RewrapKeyResponse(key_id=r.key_id, version=r.version, wrapped_key=r.wrapped_key, decision_id=r.decision_id)

        return self._run(context, "RewrapKey", go)


class KeyServer:
    """A running key service: ``.target`` is what clients dial; :meth:`stop` ends it."""

    def __init__(self, server: grpc.Server, target: str) -> None:
        self._server = server
        self.target = target

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self) -> "KeyServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(address: str, *, service: KeyService, source: "SvidSource", max_workers: int = 8) -> KeyServer:
    """Start the key service on ``address`` (``host:port``, port 0 picks one, or ``unix:PATH``).

    The server's SVID comes from ``source`` and rotates with it (new handshakes get the new one);
    clients must present an SVID (mTLS is required).

    Raises:
        TransportError: the address cannot be bound.
        SourceError: the source cannot serve.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ztid-keyd"))
    pb_grpc.add_KeyServiceServicer_to_server(KeyServicer(service, source), server)
    try:
        port = server.add_secure_port(address, server_credentials(source))
    except RuntimeError as exc:
        raise TransportError(f"key service cannot listen on {address!r}: {exc}") from exc
    if port == 0 and not address.startswith("unix:"):
        raise TransportError(f"key service cannot listen on {address!r}")
    server.start()
    target = address if address.startswith("unix:") else f"{address.rpartition(':')[0]}:{port}"
    return KeyServer(server, target)
