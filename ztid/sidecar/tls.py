"""mTLS for the sidecar's TCP listeners: its own SVID, client roots from its own trust domain only.

The credentials follow the SVID source: gRPC asks for a new certificate configuration at each
handshake, and gets one whenever the source's generation changed (rotation without restart).
Client certificates must chain to the bundle of the sidecar's *own* trust domain: the callers of an
ext_authz server are the proxies of the same mesh, so no other trust domain's anchors are loaded
(pooling them would let one trust domain mint identities of another). Which of those clients may
call is ``allowed_clients`` (:func:`caller_allowed`), checked per RPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from ztid.errors import ZtidError
from ztid.spiffeid import SpiffeId

__all__ = ["caller_allowed", "server_credentials"]


def _configuration(snapshot: Any) -> Any:
    td = snapshot.svid.spiffe_id.trust_domain
    roots = snapshot.bundles.for_trust_domain(td).to_pem()
    return grpc.ssl_server_certificate_configuration(
        [(snapshot.svid.key_pem(), snapshot.svid.chain_pem())], root_certificates=roots
    )


def server_credentials(source: Any, allowed_clients: Sequence[SpiffeId] = ()) -> grpc.ServerCredentials:
    """Rotating mTLS server credentials from ``source`` (client certificates required).

    Raises:
        SourceError: the source has no current SVID.
        VerificationError: no bundle for the sidecar's own trust domain.
    """
    first = source.snapshot()
    state = {"generation": first.generation}

    def fetch() -> Any:
        try:
            snap = source.snapshot()
        except ZtidError:
            return None  # keep serving the last configuration; the source logs its own failure
        if snap.generation == state["generation"]:
            return None
        state["generation"] = snap.generation
        return _configuration(snap)

    return grpc.dynamic_ssl_server_credentials(_configuration(first), fetch, require_client_authentication=True)


def caller_allowed(context: Any, allowed: Sequence[SpiffeId]) -> bool:
    """Whether the RPC's TLS client is one of ``allowed`` (always True when ``allowed`` is empty).

    Unix-socket callers have no certificate; file permissions on the socket guard them, so they pass.
    """
    if not allowed:
        return True
    peer = context.peer() or ""
    if peer.startswith("unix:"):
        return True
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return False
    try:
        from cryptography import x509

        from ztid.svid import spiffe_id_from_leaf

        caller = spiffe_id_from_leaf(x509.load_pem_x509_certificate(pems[0]))
    except (ValueError, ZtidError):
        return False
    return caller in allowed
