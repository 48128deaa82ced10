"""X509-SVIDs: apply the SPIFFE leaf rules, verify a peer's chain, and hold one's own SVID with its key.

Leaf rules (X509-SVID standard §2, §3, §4, §5.2), each failure an :class:`~ztid.errors.SvidError`
whose ``rule`` attribute names it:

* ``uri-san``: exactly one URI SAN (DNS and other SANs may be present);
* ``spiffe-id``: it is a valid SPIFFE ID (``spiffe`` scheme, SPIFFE-ID §2) — ``scheme`` for a
  non-``spiffe`` URI;
* ``leaf-path``: the ID has a non-root path;
* ``leaf-ca``: ``basicConstraints`` present with ``cA=false``;
* ``leaf-key-usage``: ``keyUsage`` present and critical, ``digitalSignature`` set, ``keyCertSign`` and ``cRLSign`` clear;
* ``leaf-eku``: ``extendedKeyUsage`` is optional; when present it includes ``serverAuth`` and ``clientAuth``.

Signing certificates presented in the chain (``signing-ca``, ``signing-key-usage``, ``signing-path``):
``cA=true``, ``keyCertSign`` set, and a SPIFFE ID, if any, without a path.

Path validation (RFC 5280, §5.1) is done by ``cryptography.x509.verification`` at ``at`` against
the X.509 authorities of **only** the bundle of the leaf ID's own trust domain (rule ``chain``,
``expired``, ``not-yet-valid``, ``no-bundle``, ``empty-bundle``). That verifier rejects a CA
carrying URI name constraints (X509-SVID §4.2 allows them; OpenSSL accepts them): such a chain
fails here with "unsupported name constraint". Intermediates come from the presented chain only.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from ztid.bundle import Bundle, BundleSet
from ztid.errors import IdentityError, SvidError, UsageError, VerificationError, ZtidError
from ztid.spiffeid import SpiffeId

__all__ = [
    "VerifiedJwt",
    "VerifiedSvid",
    "X509Svid",
    "parse_chain",
    "spiffe_id_from_leaf",
    "validate_jwt_svid",
    "verify_x509_svid",
]


def _err(rule: str, message: str, cls: type[SvidError] = SvidError) -> SvidError:
    return cls(f"{message} [rule: {rule}]", rule=rule)


def _ext(cert: x509.Certificate, ext_cls: type[Any], rule: str) -> Any:
    try:
        return cert.extensions.get_extension_for_class(ext_cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise _err(rule, f"certificate extensions are malformed: {exc}") from exc


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (the Workload API's ``x509_svid`` encoding)."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise _err("parse", "chain is neither PEM nor concatenated DER certificates")
        first = data[i + 1]
        if first < 0x80:
            length, head = first, 2
        else:
            n = first & 0x7F
            if n == 0 or n > 4 or i + 2 + n > len(data):
                raise _err("parse", "chain is neither PEM nor concatenated DER certificates")
            length, head = int.from_bytes(data[i + 2 : i + 2 + n], "big"), 2 + n
        end = i + head + length
        if end > len(data):
            raise _err("parse", "chain is truncated (DER length runs past the end)")
        out.append(data[i:end])
        i = end
    return out


_F = TypeVar("_F", bound=Callable[..., Any])


def _typed(func: _F) -> _F:
    """Guarantee that only ztid errors leave ``func``.

    ``cryptography`` parses certificate fields lazily, so a certificate that loaded can still
    raise ``ValueError``, ``DuplicateExtension`` or ``InvalidVersion`` deep inside a check; any
    such surprise becomes an SvidError (a deny), never an untyped exception.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ZtidError:
            raise
        except Exception as exc:
            raise _err("parse", f"certificate is malformed: {type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


@_typed
def parse_chain(chain: bytes | str | Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """Certificates from PEM, concatenated DER, or a sequence of Certificates (leaf first).

    Raises:
        SvidError: empty or unparseable.
    """
    if isinstance(chain, str):
        chain = chain.encode("utf-8", "surrogateescape")
    if isinstance(chain, (bytes, bytearray, memoryview)):
        data = bytes(chain)
        try:
            if b"-----BEGIN" in data:
                if b"-----BEGIN CERTIFICATE-----" not in data:
                    raise _err("parse", "chain PEM holds no CERTIFICATE block")
                certs = tuple(x509.load_pem_x509_certificates(data))
            else:
                certs = tuple(x509.load_der_x509_certificate(d) for d in _split_der(data))
        except ValueError as exc:
            raise _err("parse", f"chain is not parseable: {exc}") from exc
    else:
        try:
            certs = tuple(chain)
        except TypeError as exc:
            raise _err("parse", f"chain must be bytes or a sequence of Certificates, not {type(chain).__name__}") from exc
        for c in certs:
            if not isinstance(c, x509.Certificate):
                raise _err("parse", f"chain must hold cryptography Certificates, not {type(c).__name__}")
    if not certs:
        raise _err("parse", "chain is empty")
    return certs


@_typed
def spiffe_id_from_leaf(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID leaf, after checking every leaf rule (see module docstring).

    Raises:
        SvidError: a leaf rule is broken; ``.rule`` names it.
    """
    if not isinstance(cert, x509.Certificate):
        raise _err("type", f"expected a cryptography Certificate, not {type(cert).__name__}")
    san = _ext(cert, x509.SubjectAlternativeName, "uri-san")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    if len(uris) != 1:
        raise _err("uri-san", f"X509-SVID leaf must have exactly one URI SAN, found {len(uris)}")
    uri = uris[0]
    if not uri.startswith("spiffe://"):
        raise _err("scheme", f"X509-SVID leaf URI SAN is not a spiffe:// ID ({uri[:200]!r})")
    try:
        spiffe_id = SpiffeId.parse(uri)
    except IdentityError as exc:
        raise _err("spiffe-id", f"X509-SVID leaf URI SAN is not a valid SPIFFE ID: {exc}") from exc
    if not spiffe_id.path:
        raise _err("leaf-path", f"X509-SVID leaf SPIFFE ID must have a path ({uri!r} names the trust domain itself)")
    bc = _ext(cert, x509.BasicConstraints, "leaf-ca")
    if bc is None:
        raise _err("leaf-ca", "X509-SVID leaf must carry basicConstraints with cA=false (extension missing)")
    if bc.ca:
        raise _err("leaf-ca", "X509-SVID leaf must have basicConstraints cA=false (it is a CA certificate)")
    try:
        ku_ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise _err("leaf-key-usage", "X509-SVID leaf must carry keyUsage (extension missing)") from None
    except ValueError as exc:
        raise _err("leaf-key-usage", f"certificate extensions are malformed: {exc}") from exc
    if not ku_ext.critical:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must be marked critical (X509-SVID §4.3)")
    ku = ku_ext.value
    if not ku.digital_signature:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must include digitalSignature")
    if ku.key_cert_sign:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must not include keyCertSign")
    if ku.crl_sign:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must not include cRLSign")
    eku = _ext(cert, x509.ExtendedKeyUsage, "leaf-eku")
    if eku is not None and not (ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku):
        raise _err("leaf-eku", "X509-SVID leaf extendedKeyUsage, when present, must include serverAuth and clientAuth")
    return spiffe_id


def _check_signing_cert(cert: x509.Certificate, index: int) -> None:
    where = f"chain certificate #{index + 1} ({cert.subject.rfc4514_string()!r})"
    bc = _ext(cert, x509.BasicConstraints, "signing-ca")
    if bc is None or not bc.ca:
        raise _err("signing-ca", f"{where} is a signing certificate and must have basicConstraints cA=true")
    ku = _ext(cert, x509.KeyUsage, "signing-key-usage")
    if ku is None or not ku.key_cert_sign:
        raise _err("signing-key-usage", f"{where} is a signing certificate and its keyUsage must include keyCertSign")
    san = _ext(cert, x509.SubjectAlternativeName, "signing-path")
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []:
        if uri.startswith("spiffe://") and "/" in uri[len("spiffe://") :]:
            raise _err("signing-path", f"{where} names SPIFFE ID {uri[:200]!r}; a signing certificate's ID must have no path")


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

