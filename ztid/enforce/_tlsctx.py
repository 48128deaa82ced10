"""Stdlib ``ssl.SSLContext``s built from an SVID snapshot, one per source generation.

A context is immutable once built, so rotation means a new context: :class:`ContextCache` builds
one the first time a handshake sees a new snapshot and reuses it until the next. Every context

* asks for and verifies the peer's certificate (``CERT_REQUIRED``) against the *union* of the
  trust bundles' X.509 authorities: a first filter only, the peer ID's own bundle is checked after;
* speaks TLS 1.3 only unless ``allow_tls12=True``;
* never resumes a session it did not authorize: the server issues no tickets (``num_tickets = 0``,
  ``OP_NO_TICKET``), and every connection, resumed or not, is re-verified and re-decided by ztid;
* refuses TLS 1.2 renegotiation (a renegotiated handshake could change the peer's certificate).

The private key reaches OpenSSL through an anonymous in-memory file (``memfd_create``), so it is
never written to disk; elsewhere a 0600 temporary file is unlinked as soon as it is read.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from ztid.errors import TransportError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import BundleSet
    from ztid.source import SvidSnapshot, SvidSource
    from ztid.svid import X509Svid

__all__ = ["ContextCache", "build_context", "following_context", "peer_chains", "union_pem", "verified_peer"]


def union_pem(bundles: "BundleSet") -> str:
    """Every X.509 authority of every trust domain, PEM: OpenSSL's first filter, never the last word."""
    return "".join(
        ca.public_bytes(serialization.Encoding.PEM).decode("ascii") for td in sorted(bundles, key=str) for ca in bundles[td].x509_authorities
    )


def _load_svid(ctx: ssl.SSLContext, svid: "X509Svid") -> None:
    blob = svid.key_pem() + svid.chain_pem()
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("ztid-svid", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, blob)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        except OSError:
            pass  # no /proc: fall back to a private temporary file
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="ztid-") as tmp:
        path = os.path.join(tmp, "svid.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        try:
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)


def build_context(snapshot: "SvidSnapshot", *, server_side: bool, allow_tls12: bool = False) -> ssl.SSLContext:
    """One context for ``snapshot``: this workload's SVID, the union of anchors, mTLS required.

    Raises:
        TransportError: OpenSSL refused the SVID or the anchors.
    """
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if allow_tls12 else ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # the identity is the SPIFFE ID in the URI SAN, checked by ztid
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.options |= ssl.OP_NO_TICKET | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        if server_side:
            ctx.num_tickets = 0
        anchors = union_pem(snapshot.bundles)
        if anchors:  # with no anchors at all every handshake fails verification: closed
            ctx.load_verify_locations(cadata=anchors)
        _load_svid(ctx, snapshot.svid)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TransportError(f"cannot build a TLS context from the SVID source: {exc}") from exc
    return ctx


class ContextCache:
    """The context for a source's current snapshot, rebuilt when the source's generation changes."""

    def __init__(self, source: "SvidSource", *, server_side: bool, allow_tls12: bool = False, sslsocket_class: Any = None) -> None:
        self._source = source
        self._server_side = server_side
        self._allow_tls12 = allow_tls12
        self._sslsocket_class = sslsocket_class
        self._lock = threading.Lock()
        self._current: tuple[int, ssl.SSLContext, "SvidSnapshot"] | None = None

    @property
    def allow_tls12(self) -> bool:
        """Whether the contexts accept TLS 1.2."""
        return self._allow_tls12

    def current(self) -> tuple[ssl.SSLContext, "SvidSnapshot"]:
        """The context and snapshot every new handshake uses.

        Raises:
            SourceError: the source cannot serve (fail closed).
            TransportError: the snapshot cannot be turned into a context.
        """
        snap = self._source.snapshot()
        cur = self._current
        if cur is not None and cur[0] == snap.generation:
            return cur[1], cur[2]
        with self._lock:
            cur = self._current
            if cur is None or cur[0] != snap.generation:
                ctx = build_context(snap, server_side=self._server_side, allow_tls12=self._allow_tls12)
                if self._sslsocket_class is not None:
                    ctx.sslsocket_class = self._sslsocket_class
                cur = (snap.generation, ctx, snap)
                self._current = cur
        return cur[1], cur[2]


def following_context(contexts: ContextCache) -> ssl.SSLContext:
    """A server context that, on every ClientHello, swaps itself for ``contexts``' current one.

    OpenSSL calls the servername callback for every ClientHello, with or without SNI; setting
    ``sslobj.context`` there switches the certificate, key and verification store for that
    handshake. A source that cannot serve refuses the handshake with an internal_error alert.

    Raises:
        SourceError: the source cannot serve now.
        TransportError: the snapshot cannot be turned into a context.
    """
    _, snap = contexts.current()
    front = build_context(snap, server_side=True, allow_tls12=contexts.allow_tls12)

    def _follow(sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        from ztid.errors import ZtidError

        try:
            ctx, _ = contexts.current()
        except ZtidError:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if sslobj.context is not ctx:
            sslobj.context = ctx
        return None

    front.sni_callback = _follow
    return front


def peer_chains(sslobj: ssl.SSLSocket | ssl.SSLObject) -> tuple[list[bytes], list[bytes] | None]:
    """The peer's chain as presented (leaf first, DER) and the trust anchor OpenSSL's path ended at.

    Returns ``(presented, [anchor])``; the anchor list is ``None`` where it cannot be read.
    Python 3.13 made ``get_unverified_chain``/``get_verified_chain`` public; 3.10 to 3.12 have them
    on the private ``_ssl._SSLSocket`` object (which also puts the leaf first on the server side,
    where OpenSSL leaves it out). Where neither exists only the leaf is returned, so a chain with
    intermediates then fails verification: closed, never open.
    """
    getter = getattr(sslobj, "get_unverified_chain", None)
    vgetter = getattr(sslobj, "get_verified_chain", None)
    if getter is None:
        inner = getattr(sslobj, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
        vgetter = getattr(inner, "get_verified_chain", None)
    presented = _der_list(getter()) if getter is not None else []
    anchor = None
    if vgetter is not None:
        verified = vgetter()
        anchor = _der_list(verified[-1:]) if verified else None
    if not presented:
        leaf = sslobj.getpeercert(binary_form=True)
        presented = [leaf] if leaf else []
    return presented, anchor


def verified_peer(authz: Any, sslobj: ssl.SSLSocket | ssl.SSLObject, bundles: "BundleSet") -> Any:
    """The peer's VerifiedSvid: from ``authz``'s cache when this leaf was verified against these
    bundles before, else by reading the presented chain and verifying it (and OpenSSL's anchor).

    Raises:
        TransportError: no certificate, or the chain does not verify against its own domain's bundle.
    """
    leaf = sslobj.getpeercert(binary_form=True)
    if leaf:
        hit = authz.cached(leaf, bundles)
        if hit is not None:
            return hit
    presented, anchor = peer_chains(sslobj)
    svid = authz.verify(presented, bundles)
    authz.check_anchor(anchor, svid, bundles)
    return svid


def _der_list(certs: Sequence[Any] | None) -> list[bytes]:
    if not certs:
        return []
    import _ssl

    return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in certs]
