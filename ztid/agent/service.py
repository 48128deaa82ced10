"""The SPIFFE Workload API servicer: maps each RPC to the agent state, per the standard's rules.

* Every RPC first checks the ``workload.spiffe.io: true`` metadata (Workload Endpoint §3) and
  answers INVALID_ARGUMENT without it.
* A caller the agent cannot identify, or with no matching entry, gets PERMISSION_DENIED
  ("no identity issued", as SPIRE says), also on an open stream when its entry goes away.
* Streams send the full state first, then again on every change (rotation, reload), never deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from cryptography.hazmat.primitives import serialization

from ztid._proto import workload_pb2 as pb
from ztid._proto import workload_pb2_grpc as pb_grpc
from ztid.agent.selectors import Entry, PeerCred
from ztid.agent.state import AgentState, Issued
from ztid.errors import IdentityError, SvidError, UsageError, ZtidError
from ztid.jwtsvid import validate_jwt_svid
from ztid.spiffeid import SpiffeId

__all__ = ["WorkloadApiServicer", "HEADER_KEY", "HEADER_VALUE"]

HEADER_KEY = "workload.spiffe.io"
HEADER_VALUE = "true"


def _der_chain(issued: Issued) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in issued.svid.cert_chain)


def _der_key(issued: Issued) -> bytes:
    return issued.svid.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class WorkloadApiServicer(pb_grpc.SpiffeWorkloadAPIServicer):
    """Serves :class:`AgentState` to callers identified by ``peer_of(context.peer())``."""

    def __init__(self, state: AgentState, peer_of: Callable[[str], PeerCred | None]) -> None:
        self._state = state
        self._peer_of = peer_of

    # -- common checks -------------------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext, *, need_entry: bool = True) -> tuple[PeerCred, tuple[Entry, ...]]:
        metadata = {k: v for k, v in context.invocation_metadata()}
        if metadata.get(HEADER_KEY) != HEADER_VALUE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        peer = self._peer_of(context.peer())
        if peer is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "caller credentials unknown")
        entries = self._state.entries_for(peer)
        if need_entry and not entries:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        return peer, entries

    def _stream(self, context: grpc.ServicerContext, build: Callable[[tuple[Entry, ...]], tuple[object, object, float | None]]) -> Iterator[object]:
        """Yield ``build(entries)``'s response whenever its change key differs; re-check entries each time."""
        peer, _ = self._caller(context)
        state = self._state
        context.add_callback(state.kick)
        last: object = object()
        while context.is_active() and not state.closed:
            version = state.version
            entries = state.entries_for(peer)
            if not entries:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
            try:
                response, key, until = build(entries)
            except ZtidError as exc:  # e.g. the CA expired: say so, the client retries
                context.abort(grpc.StatusCode.UNAVAILABLE, f"agent cannot serve: {exc}")
            if key != last:
                last = key
                yield response
            state.wait(version, until=until, alive=context.is_active)

    # -- X.509 ---------------------------------------------------------------------------------

    def FetchX509SVID(self, request: pb.X509SVIDRequest, context: grpc.ServicerContext) -> Iterator[pb.X509SVIDResponse]:
        def build(entries: tuple[Entry, ...]) -> tuple[object, object, float | None]:
            issued = [self._state.issued(e.spiffe_id) for e in entries]
            bundles = self._state.bundles
            ders = self._state.x509_bundle_ders()
            own = str(self._state.trust_domain.id())
            resp = pb.X509SVIDResponse(
                svids=[
                    pb.X509SVID(spiffe_id=str(e.spiffe_id), x509_svid=_der_chain(i), x509_svid_key=_der_key(i),
                                bundle=ders[own], hint=e.hint)
                    for e, i in zip(entries, issued)
                ],
                federated_bundles={td: der for td, der in ders.items() if td != own},
            )
            key = (tuple(i.svid.leaf.serial_number for i in issued), tuple(e.hint for e in entries), bundles)
            return resp, key, min(i.rotate_at for i in issued)

        yield from self._stream(context, build)  # type: ignore[misc]

    def FetchX509Bundles(self, request: pb.X509BundlesRequest, context: grpc.ServicerContext) -> Iterator[pb.X509BundlesResponse]:
        def build(entries: tuple[Entry, ...]) -> tuple[object, object, float | None]:
            bundles = self._state.bundles
            return pb.X509BundlesResponse(bundles=self._state.x509_bundle_ders()), bundles, None

        yield from self._stream(context, build)  # type: ignore[misc]

    # -- JWT -----------------------------------------------------------------------------------

    def FetchJWTBundles(self, request: pb.JWTBundlesRequest, context: grpc.ServicerContext) -> Iterator[pb.JWTBundlesResponse]:
        def build(entries: tuple[Entry, ...]) -> tuple[object, object, float | None]:
            bundles = self._state.bundles
            return pb.JWTBundlesResponse(bundles=self._state.jwt_bundle_docs()), bundles, None

        yield from self._stream(context, build)  # type: ignore[misc]

    def FetchJWTSVID(self, request: pb.JWTSVIDRequest, context: grpc.ServicerContext) -> pb.JWTSVIDResponse:
        _, entries = self._caller(context)
        audience = tuple(request.audience)
        if not audience or any(not a for a in audience):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if request.spiffe_id:
            try:
                wanted = SpiffeId.parse(request.spiffe_id)
            except IdentityError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {exc}")
            entries = tuple(e for e in entries if e.spiffe_id == wanted)
            if not entries:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"no identity issued for {request.spiffe_id!r}")
        try:
            svids = [pb.JWTSVID(spiffe_id=str(e.spiffe_id), svid=self._state.mint_jwt(e.spiffe_id, audience), hint=e.hint)
                     for e in entries]
        except UsageError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ZtidError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"agent cannot serve: {exc}")
        return pb.JWTSVIDResponse(svids=svids)

    def ValidateJWTSVID(self, request: pb.ValidateJWTSVIDRequest, context: grpc.ServicerContext) -> pb.ValidateJWTSVIDResponse:
        self._caller(context, need_entry=False)
        if not request.audience:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
        try:
            verified = validate_jwt_svid(request.svid, self._state.bundles, request.audience)
        except (SvidError, UsageError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        resp = pb.ValidateJWTSVIDResponse(spiffe_id=str(verified.spiffe_id))
        resp.claims.update(dict(verified.claims))
        return resp
