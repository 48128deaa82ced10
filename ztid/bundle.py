"""Trust bundles: one trust domain's X.509 and JWT authorities, and a set keyed by trust domain.

Bundles are read from and written to PEM and the SPIFFE bundle format (a JWK Set); the formats,
and which malformed SPIFFE bundle elements are ignored rather than rejected, are described in
:mod:`ztid.bundle_format`.

A bundle with no X.509 authorities makes every X509-SVID of its trust domain invalid (and no JWT
authorities every JWT-SVID); an empty ``keys`` list is a valid bundle that trusts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ztid._jwk import is_ca
from ztid.bundle_format import _MAX_SEQUENCE, _as_td, read_jwks, read_pem, write_jwks, write_pem
from ztid.errors import BundleError, VerificationError
from ztid.spiffeid import TrustDomain

__all__ = ["Bundle", "BundleSet"]


class Bundle:
    """One trust domain's authorities. Immutable; compares by content (not by ``skipped``).

    Attributes:
        trust_domain: the trust domain this bundle is for.
        x509_authorities: CA certificates that X509-SVIDs of ``trust_domain`` must chain to.
        jwt_authorities: ``kid`` -> public key for JWT-SVIDs of ``trust_domain`` (read-only mapping).
        sequence: ``spiffe_sequence`` when known.
        refresh_hint: ``spiffe_refresh_hint`` (seconds) when known.
        skipped: one line per SPIFFE bundle element that was ignored, saying why.
    """

    __slots__ = ("trust_domain", "x509_authorities", "jwt_authorities", "sequence", "refresh_hint", "skipped", "_store")

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...]
    jwt_authorities: Mapping[str, PublicKeyTypes]
    sequence: int | None
    refresh_hint: int | None
    skipped: tuple[str, ...]

    def __init__(
        self,
        trust_domain: TrustDomain | str,
        x509_authorities: Iterable[x509.Certificate] = (),
        jwt_authorities: Mapping[str, PublicKeyTypes] | None = None,
        *,
        sequence: int | None = None,
        refresh_hint: int | None = None,
        skipped: Iterable[str] = (),
    ) -> None:
        """Build a bundle from already-parsed parts.

        Raises:
            BundleError: a part has the wrong type, or a duplicate/invalid value.
        """
        td = _as_td(trust_domain)
        cas = tuple(x509_authorities)
        for cert in cas:
            if not isinstance(cert, x509.Certificate):
                raise BundleError(f"x509 authorities must be cryptography Certificates, not {type(cert).__name__}")
            if not is_ca(cert):
                # A leaf in the trust store would be accepted as its own anchor (pinning): not a SPIFFE bundle.
                raise BundleError(f"x509 authority {cert.subject.rfc4514_string()!r} is not a CA (basicConstraints cA must be true)")
        seen: set[bytes] = set()
        unique = []
        for cert in cas:  # the same CA twice is harmless; keep one
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                unique.append(cert)
        jwt = dict(jwt_authorities or {})
        for kid, key in jwt.items():
            if not isinstance(kid, str) or not kid:
                raise BundleError(f"JWT authority key ids must be non-empty strings, got {kid!r}")
            if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
                raise BundleError(f"JWT authority {kid!r} must be an EC or RSA public key, not {type(key).__name__}")
        for name, value in (("sequence", sequence), ("refresh_hint", refresh_hint)):
            if value is not None and (type(value) is not int or not 0 <= value <= _MAX_SEQUENCE):
                raise BundleError(f"bundle {name} must be a non-negative integer, got {value!r}")
        set_ = object.__setattr__
        set_(self, "trust_domain", td)
        set_(self, "x509_authorities", tuple(unique))
        set_(self, "jwt_authorities", MappingProxyType(jwt))
        set_(self, "sequence", sequence)
        set_(self, "refresh_hint", refresh_hint)
        set_(self, "skipped", tuple(skipped))
        set_(self, "_store", None)

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def from_pem(cls, data: bytes, *, trust_domain: TrustDomain | str | None = None) -> "Bundle":
        """Read a PEM bundle of CA certificates.

        Raises:
            BundleError: not PEM, no certificate, a non-CA certificate, or an unclear trust domain.
        """
        td, certs = read_pem(data, trust_domain)
        return cls(td, certs)

    @classmethod
    def from_jwks(cls, data: bytes | str, *, trust_domain: TrustDomain | str | None = None) -> "Bundle":
        """Read a SPIFFE bundle (JWK Set).

        The trust domain is ``trust_domain`` or, when omitted, the one the ``x509-svid`` CA
        certificates name in their URI SAN.

        Raises:
            BundleError: the document is malformed (see :mod:`ztid.bundle_format` for what is ignored instead).
        """
        td, cas, jwt, sequence, refresh_hint, skipped = read_jwks(data, trust_domain)
        return cls(td, cas, jwt, sequence=sequence, refresh_hint=refresh_hint, skipped=skipped)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, trust_domain: TrustDomain | str | None = None) -> "Bundle":
        """Read a PEM or SPIFFE bundle (JSON) file; the format is sniffed from the content.

        Raises:
            BundleError: the file cannot be read or is malformed.
        """
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        try:
            return cls.parse(data, trust_domain=trust_domain)
        except BundleError as exc:
            raise BundleError(f"{os.fspath(path)}: {exc}") from exc

    @classmethod
    def parse(cls, data: bytes, *, trust_domain: TrustDomain | str | None = None) -> "Bundle":
        """Read PEM or SPIFFE bundle bytes, sniffing which (JSON starts with ``{``).

        Raises:
            BundleError: malformed input.
        """
        if not isinstance(data, (bytes, bytearray)):
            raise BundleError(f"bundle must be bytes, not {type(data).__name__}")
        if bytes(data).lstrip().startswith(b"{"):
            return cls.from_jwks(data, trust_domain=trust_domain)
        return cls.from_pem(data, trust_domain=trust_domain)

    # -- writing -------------------------------------------------------------------------------

    def to_pem(self) -> bytes:
        """The X.509 authorities as PEM (JWT authorities are not representable in PEM)."""
        return write_pem(self.x509_authorities)

    def to_jwks(self) -> bytes:
        """The bundle in the SPIFFE bundle format (JSON, UTF-8)."""
        return write_jwks(self.x509_authorities, self.jwt_authorities, self.sequence, self.refresh_hint)

    # -- derived bundles ------------------------------------------------------------------------

    def with_x509_authorities(self, authorities: Iterable[x509.Certificate]) -> "Bundle":
        """A copy holding ``authorities`` as its X.509 authorities."""
        return Bundle(self.trust_domain, authorities, self.jwt_authorities, sequence=self.sequence, refresh_hint=self.refresh_hint)

    def with_jwt_authorities(self, authorities: Mapping[str, PublicKeyTypes]) -> "Bundle":
        """A copy holding ``authorities`` as its JWT authorities."""
        return Bundle(self.trust_domain, self.x509_authorities, authorities, sequence=self.sequence, refresh_hint=self.refresh_hint)

    def without_x509_authority(self, cert: x509.Certificate) -> "Bundle":
        """A copy without ``cert`` (e.g. a rotated-out root): SVIDs chaining to it stop verifying."""
        der = cert.public_bytes(serialization.Encoding.DER)
        return self.with_x509_authorities(c for c in self.x509_authorities if c.public_bytes(serialization.Encoding.DER) != der)

    def x509_store(self) -> Any:
        """The ``cryptography.x509.verification.Store`` of the X.509 authorities (built once).

        Raises:
            VerificationError: the bundle has no X.509 authorities (nothing of this domain verifies).
        """
        store = self._store
        if store is None:
            if not self.x509_authorities:
                raise VerificationError(f"trust bundle for trust domain {self.trust_domain.name!r} has no X.509 authorities; every X509-SVID of it is invalid")
            from cryptography.x509.verification import Store

            store = Store(list(self.x509_authorities))
            object.__setattr__(self, "_store", store)
        return store

    # -- value semantics -----------------------------------------------------------------------

    def _key(self) -> tuple[Any, ...]:
        der = tuple(c.public_bytes(serialization.Encoding.DER) for c in self.x509_authorities)
        jwt = tuple(
            sorted((kid, k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)) for kid, k in self.jwt_authorities.items())
        )
        return (self.trust_domain, der, jwt, self.sequence, self.refresh_hint)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bundle):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Bundle is immutable")

    def __repr__(self) -> str:
        return (
            f"Bundle({self.trust_domain.name!r}, x509_authorities={len(self.x509_authorities)}, "
            f"jwt_authorities={sorted(self.jwt_authorities)}, sequence={self.sequence}, refresh_hint={self.refresh_hint})"
        )


class BundleSet(Mapping[TrustDomain, Bundle]):
    """Bundles keyed by trust domain (immutable). Verification picks the bundle of the SVID's own
    trust domain; bundles are never pooled.
    """

    __slots__ = ("_by_td",)

    def __init__(self, bundles: Iterable[Bundle] = ()) -> None:
        """Key ``bundles`` by trust domain.

        Raises:
            BundleError: two bundles for one trust domain, or a non-Bundle item.
        """
        by_td: dict[TrustDomain, Bundle] = {}
        for b in bundles:
            if not isinstance(b, Bundle):
                raise BundleError(f"BundleSet holds Bundle objects, not {type(b).__name__}")
            if b.trust_domain in by_td:
                raise BundleError(f"two bundles for trust domain {b.trust_domain.name!r}")
            by_td[b.trust_domain] = b
        object.__setattr__(self, "_by_td", by_td)

    @classmethod
    def load(cls, *paths: str | os.PathLike[str], trust_domain: TrustDomain | str | None = None) -> "BundleSet":
        """Read PEM or SPIFFE bundle files, one bundle each.

        Raises:
            BundleError: a file is unreadable or malformed, or two files name one trust domain.
        """
        return cls(Bundle.load(p, trust_domain=trust_domain) for p in paths)

    def __getitem__(self, td: TrustDomain) -> Bundle:
        return self._by_td[td]

    def __iter__(self) -> Iterator[TrustDomain]:
        return iter(self._by_td)

    def __len__(self) -> int:
        return len(self._by_td)

    def __contains__(self, td: object) -> bool:
        return td in self._by_td

    @property
    def trust_domains(self) -> frozenset[TrustDomain]:
        """The trust domains that have a bundle."""
        return frozenset(self._by_td)

    def for_trust_domain(self, td: TrustDomain | str) -> Bundle:
        """The bundle for ``td``.

        Raises:
            VerificationError: there is none (the peer is untrusted).
        """
        key = td if isinstance(td, TrustDomain) else _as_td(td)
        bundle = self._by_td.get(key)
        if bundle is None:
            raise VerificationError(f"no trust bundle for trust domain {key.name!r}")
        return bundle

    def replace(self, bundle: Bundle) -> "BundleSet":
        """A new set with ``bundle`` added, or replacing the one of its trust domain."""
        if not isinstance(bundle, Bundle):
            raise BundleError(f"BundleSet holds Bundle objects, not {type(bundle).__name__}")
        merged = dict(self._by_td)
        merged[bundle.trust_domain] = bundle
        return BundleSet(merged.values())

    def without(self, td: TrustDomain) -> "BundleSet":
        """A new set without the bundle of ``td``."""
        return BundleSet(b for t, b in self._by_td.items() if t != td)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("BundleSet is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BundleSet):
            return self._by_td == other._by_td
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._by_td.items()))

    def __repr__(self) -> str:
        return f"BundleSet({sorted(td.name for td in self._by_td)})"
