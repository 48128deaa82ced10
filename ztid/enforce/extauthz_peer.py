"""Who is asking, for ext_authz: the source principal, its certificate and XFCC, each re-verified.

Trust order (each step failing closed with a reason code from :mod:`ztid.enforce.extauthz_codes`):

1. ``attributes.source.principal``: must be a ``spiffe://`` ID (Envoy falls back to a DNS SAN or the
   Subject when the certificate has no URI SAN, so anything else is ``peer_not_spiffe``);
2. ``attributes.source.certificate`` when present (URL-encoded PEM): re-verified against the bundle
   of its own trust domain and required to name the principal;
3. XFCC only with ``trust_xfcc``: only its last element, only when its ``By`` is the configured
   proxy, only over an mTLS hop whose principal is that proxy or the XFCC client itself, exactly one
   ``URI``, ``Chain``/``Cert`` re-verified and ``Hash`` checked against the certificate when present.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ztid.enforce.extauthz_codes import (
    MALFORMED_IDENTITY,
    NO_PEER,
    PEER_CERTIFICATE_INVALID,
    PEER_CERTIFICATE_MISSING,
    PEER_MISMATCH,
    PEER_NOT_SPIFFE,
    XFCC_BAD_URI,
    XFCC_CERTIFICATE_INVALID,
    XFCC_HASH_MISMATCH,
    XFCC_MALFORMED,
    XFCC_MISMATCH,
    XFCC_UNTRUSTED,
    Deny,
)
from ztid.enforce.extauthz_config import ExtAuthzConfig
from ztid.enforce.xfcc import XfccElement, parse_xfcc
from ztid.errors import IdentityError, ZtidError
from ztid.spiffeid import SpiffeId

__all__ = ["XFCC_HEADER", "PeerIdentifier"]

XFCC_HEADER: Final = "x-forwarded-client-cert"
_CACHE_LIMIT: Final = 4096


class PeerIdentifier:
    """The peer of a CheckRequest, with parsed principals and verified certificates cached.

    Args:
        config: the ext_authz configuration (``require_certificate``, ``trust_xfcc``, the proxy ID).
    """

    def __init__(self, config: ExtAuthzConfig) -> None:
        self.config = config
        self._ids: dict[str, SpiffeId] = {}  # principal text -> parsed ID
        self._cache: dict[str, tuple[SpiffeId, float, float]] = {}  # certificate -> verified ID, validity (epoch s)
        self._cache_owner: Any = None  # the BundleSet the certificate cache was filled from

    def identify(self, attrs: Any, headers: Mapping[str, str], bundles: Any, window: list[float]) -> SpiffeId:
        principal = attrs.source.principal
        peer = self.principal(principal) if principal else None
        certificate = attrs.source.certificate
        if certificate:
            if peer is None:
                raise Deny(NO_PEER, "a peer certificate without a principal")
            verified = self._verify(certificate, PEER_CERTIFICATE_INVALID, bundles, window, encoded=True)
            if verified != peer:
                raise Deny(PEER_MISMATCH, f"peer certificate names {verified}, principal is {peer}")
        elif peer is not None and self.config.require_certificate:
            raise Deny(PEER_CERTIFICATE_MISSING, "no peer certificate (include_peer_certificate is required)")
        if self.config.trust_xfcc and XFCC_HEADER in headers:
            return self._xfcc(headers[XFCC_HEADER], peer, bundles, window)
        if peer is None:
            raise Deny(NO_PEER, "no authenticated peer (no source principal)")
        return peer

    def principal(self, principal: str) -> SpiffeId:
        hit = self._ids.get(principal)
        if hit is not None:
            return hit
        if not principal.startswith("spiffe://"):
            raise Deny(PEER_NOT_SPIFFE, "the peer principal is not a SPIFFE ID")
        try:
            parsed = SpiffeId.parse(principal)
        except IdentityError as exc:
            raise Deny(MALFORMED_IDENTITY, f"the peer principal is not a valid SPIFFE ID: {exc}") from None
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        self._ids[principal] = parsed
        return parsed

    def _xfcc(self, header: str, peer: SpiffeId | None, bundles: Any, window: list[float]) -> SpiffeId:
        try:
            last: XfccElement = parse_xfcc(header)[-1]
        except ZtidError as exc:
            raise Deny(XFCC_MALFORMED, str(exc)) from None
        proxy = self.config.proxy_spiffe_id
        if peer is None:
            raise Deny(XFCC_UNTRUSTED, "XFCC arrived over a hop without mTLS")
        if str(proxy) not in last.by:
            raise Deny(XFCC_UNTRUSTED, "the last XFCC element was not added by the trusted proxy")
        if len(last.uri) != 1:
            raise Deny(XFCC_BAD_URI, f"the last XFCC element has {len(last.uri)} URI values, expected exactly 1")
        client = self.principal(last.uri[0])
        if peer != proxy and peer != client:
            raise Deny(XFCC_MISMATCH, f"the mTLS peer {peer} is neither the trusted proxy nor the XFCC client")
        pem = last.chain or last.cert
        if last.chain is not None and last.cert is not None and _leaf_sha256(last.cert) != _leaf_sha256(last.chain):
            raise Deny(XFCC_MISMATCH, "the XFCC Cert is not the leaf of its Chain")
        if pem is not None:
            verified = self._verify(pem, XFCC_CERTIFICATE_INVALID, bundles, window)
            if verified != client:
                raise Deny(XFCC_MISMATCH, f"the XFCC certificate names {verified}, its URI is {client}")
        if last.hash is not None and pem is not None:
            if _leaf_sha256(pem) != last.hash:
                raise Deny(XFCC_HASH_MISMATCH, "the XFCC Hash does not match its certificate")
        return client

    def _verify(self, text: str, code: str, bundles: Any, window: list[float], *, encoded: bool = False) -> SpiffeId:
        """The verified SPIFFE ID of a PEM chain (URL-encoded when ``encoded``), cached until its notAfter.

        ``window`` is narrowed to the chain's validity, so a plan built on it ends when it does.
        """
        from ztid.svid import verify_x509_svid

        if bundles is not self._cache_owner:
            self._cache, self._cache_owner = {}, bundles
        now_ts = time.time()
        hit = self._cache.get(text)
        if hit is None or not hit[1] <= now_ts <= hit[2]:
            now = datetime.fromtimestamp(now_ts, UTC)
            pem = urllib.parse.unquote(text) if encoded else text
            try:
                verified = verify_x509_svid(pem.encode("ascii"), bundles, at=now)
            except (ZtidError, UnicodeEncodeError) as exc:
                raise Deny(code, f"certificate does not verify: {exc}") from None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            hit = (verified.spiffe_id, verified.leaf.not_valid_before_utc.timestamp(), verified.not_after.timestamp())
            self._cache[text] = hit
        window[0], window[1] = max(window[0], hit[1]), min(window[1], hit[2])
        return hit[0]


def _leaf_sha256(pem: str) -> str:
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode("ascii"))[0]
    except (ValueError, UnicodeEncodeError) as exc:
        raise Deny(XFCC_CERTIFICATE_INVALID, f"XFCC certificate unreadable: {exc}") from None
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()

