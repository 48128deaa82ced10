"""X509-SVIDs: verify a peer's chain against its own trust domain's bundle, and hold one's own SVID with its key.

The leaf and signing-certificate rules (each failure an :class:`~ztid.errors.SvidError` whose
``rule`` attribute names it) are in :mod:`ztid.svid_rules`; :func:`parse_chain` and
:func:`spiffe_id_from_leaf` are re-exported here.

Path validation (RFC 5280, §5.1) is done by ``cryptography.x509.verification`` at ``at`` against
the X.509 authorities of **only** the bundle of the leaf ID's own trust domain (rule ``chain``,
``expired``, ``not-yet-valid``, ``no-bundle``, ``empty-bundle``). That verifier rejects a CA
carrying URI name constraints (X509-SVID §4.2 allows them; OpenSSL accepts them): such a chain
fails here with "unsupported name constraint". Intermediates come from the presented chain only.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification as xv

from ztid.bundle import Bundle, BundleSet
from ztid.errors import UsageError, VerificationError
from ztid.spiffeid import SpiffeId
from ztid.svid_rules import _check_signing_cert, _err, _typed, parse_chain, spiffe_id_from_leaf

__all__ = [
    "VerifiedJwt",
    "VerifiedSvid",
    "X509Svid",
    "parse_chain",
    "spiffe_id_from_leaf",
    "validate_jwt_svid",
    "verify_x509_svid",
]


def _utc(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return dt.datetime.now(dt.timezone.utc)
    if not isinstance(when, dt.datetime):
        raise UsageError(f"at must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return when.astimezone(dt.timezone.utc)


_CA_POLICY = xv.ExtensionPolicy.webpki_defaults_ca()
# Leaf rules are checked (with named errors) by spiffe_id_from_leaf; the EE policy only relaxes the
# Web PKI demands that SPIFFE does not make (AKI, EKU clientAuth-only) and still rejects unknown critical extensions.
_EE_POLICY = (
    xv.ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.AuthorityKeyIdentifier, xv.Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, None)
)


@dataclass(frozen=True, slots=True)
class VerifiedSvid:
    """A peer X509-SVID that verified.

    Attributes:
        spiffe_id: the leaf's SPIFFE ID.
        leaf: the leaf certificate.
        chain: the certificates as presented, leaf first.
        not_after: when the verified path stops being valid (earliest notAfter on it), aware UTC.
    """

    spiffe_id: SpiffeId
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    not_after: dt.datetime


@_typed
def verify_x509_svid(
    chain: bytes | str | Sequence[x509.Certificate], bundles: BundleSet | Bundle, *, at: dt.datetime | None = None
) -> VerifiedSvid:
    """Verify a peer's X509-SVID chain (leaf first) against its own trust domain's bundle.

    Args:
        chain: PEM, concatenated DER, or Certificates; the leaf first, then intermediates.
        bundles: a BundleSet, or one Bundle (which must be for the leaf's trust domain).
        at: the validation time (aware); default now.

    Raises:
        SvidError: the chain is unparseable or a leaf/signing rule is broken (``.rule`` names it).
        VerificationError: no bundle for the trust domain, an empty bundle, or path validation failed.
        UsageError: ``at`` is naive or not a datetime.
    """
    when = _utc(at)
    certs = parse_chain(chain)
    leaf, intermediates = certs[0], list(certs[1:])
    spiffe_id = spiffe_id_from_leaf(leaf)
    for i, cert in enumerate(intermediates, start=1):
        _check_signing_cert(cert, i)
    td = spiffe_id.trust_domain
    if isinstance(bundles, Bundle):
        if bundles.trust_domain != td:
            raise _err("no-bundle", f"no trust bundle for trust domain {td.name!r} (given the bundle of {bundles.trust_domain.name!r})", VerificationError)
        bundle = bundles
    elif isinstance(bundles, BundleSet):
        bundle = bundles.get(td)
        if bundle is None:
            raise _err("no-bundle", f"no trust bundle for trust domain {td.name!r}; {spiffe_id} is untrusted", VerificationError)
    else:
        raise UsageError(f"bundles must be a BundleSet or Bundle, not {type(bundles).__name__}")
    if not bundle.x509_authorities:
        raise _err("empty-bundle", f"trust bundle for {td.name!r} has no X.509 authorities; every X509-SVID of it is invalid", VerificationError)
    if leaf.not_valid_after_utc < when:
        raise _err("expired", f"X509-SVID {spiffe_id} expired at {leaf.not_valid_after_utc.isoformat()}", VerificationError)
    if leaf.not_valid_before_utc > when:
        raise _err("not-yet-valid", f"X509-SVID {spiffe_id} is not valid before {leaf.not_valid_before_utc.isoformat()}", VerificationError)
    try:
        verifier = (
            xv.PolicyBuilder()
            .store(bundle.x509_store())
            .time(when)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        verified = verifier.verify(leaf, intermediates)
    except xv.VerificationError as exc:
        raise _err("chain", f"X509-SVID {spiffe_id} does not chain to the trust bundle of {td.name!r}: {exc}", VerificationError) from exc
    except (ValueError, TypeError) as exc:
        raise _err("chain", f"X509-SVID {spiffe_id} could not be verified: {exc}", VerificationError) from exc
    not_after = min(c.not_valid_after_utc for c in verified.chain)
    return VerifiedSvid(spiffe_id=spiffe_id, leaf=leaf, chain=certs, not_after=not_after)


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


@dataclass(frozen=True, slots=True)
class X509Svid:
    """One's own X509-SVID: the chain (leaf first) and the leaf's private key.

    Attributes:
        spiffe_id: the leaf's SPIFFE ID.
        cert_chain: leaf first, then intermediates (never the root).
        private_key: the leaf's private key.
    """

    spiffe_id: SpiffeId
    cert_chain: tuple[x509.Certificate, ...]
    private_key: PrivateKeyTypes

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate."""
        return self.cert_chain[0]

    @property
    def not_after(self) -> dt.datetime:
        """The leaf's notAfter (aware UTC)."""
        return self.cert_chain[0].not_valid_after_utc

    @classmethod
    def from_parts(cls, chain: bytes | Sequence[x509.Certificate], private_key: PrivateKeyTypes) -> "X509Svid":
        """Build from parsed parts, checking the leaf rules, signing certificates and key match.

        Raises:
            SvidError: a rule is broken or the key does not belong to the leaf.
        """
        certs = parse_chain(chain)
        spiffe_id = spiffe_id_from_leaf(certs[0])
        for i, cert in enumerate(certs[1:], start=1):
            _check_signing_cert(cert, i)
        if not isinstance(private_key, _KEY_TYPES):
            raise _err("key", f"unsupported private key type {type(private_key).__name__}")
        if _public_der(private_key.public_key()) != _public_der(certs[0].public_key()):
            raise _err("key-mismatch", "the private key does not match the X509-SVID leaf certificate")
        return cls(spiffe_id=spiffe_id, cert_chain=certs, private_key=private_key)

    @classmethod
    def parse(cls, chain_pem: bytes, key_pem: bytes) -> "X509Svid":
        """Parse one's own SVID from PEM (chain leaf first; unencrypted PKCS#8/SEC1/PKCS#1 key).

        Raises:
            SvidError: unparseable input, a broken rule, or a key that does not match the leaf.
        """
        if not isinstance(key_pem, (bytes, bytearray)):
            raise _err("key", f"key must be PEM bytes, not {type(key_pem).__name__}")
        try:
            key = serialization.load_pem_private_key(bytes(key_pem), password=None)
        except (ValueError, TypeError) as exc:
            raise _err("key", f"private key is not an unencrypted PEM key: {exc}") from exc
        except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
            raise _err("key", f"private key is unsupported: {exc}") from exc
        return cls.from_parts(chain_pem, key)

    @classmethod
    def load(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> "X509Svid":
        """Read one's own SVID from a chain PEM file and a key PEM file.

        Raises:
            SvidError: a file is unreadable, or as :meth:`parse`.
        """
        parts = []
        for path, what in ((cert_path, "certificate chain"), (key_path, "private key")):
            try:
                with open(path, "rb") as f:
                    parts.append(f.read())
            except OSError as exc:
                raise _err("read", f"cannot read {what} {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        return cls.parse(parts[0], parts[1])

    def chain_pem(self) -> bytes:
        """The chain as PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.cert_chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (handle with care)."""
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"X509Svid({str(self.spiffe_id)!r}, not_after={self.not_after.isoformat()})"


def __getattr__(name: str) -> Any:
    # JWT-SVID names live in ztid.jwtsvid (another module) and are re-exported lazily.
    if name in ("validate_jwt_svid", "VerifiedJwt", "mint_jwt_svid"):
        from ztid import jwtsvid

        return getattr(jwtsvid, name)
    raise AttributeError(f"module 'ztid.svid' has no attribute {name!r}")

