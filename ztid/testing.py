"""Test helpers: a CA that mints good SVIDs and deliberately broken ones (like trustme, for SPIFFE).

>>> ca = TestCA.create("a.test")
>>> good = ca.issue("spiffe://a.test/w")             # an X509Svid, as DevCA.issue
>>> bad = ca.mint("spiffe://a.test/w", ca=True)      # a Minted leaf that breaks the leaf-ca rule
>>> bad.chain_pem()                                  # feed it to verify_x509_svid and expect SvidError

Every knob of :meth:`TestCA.mint` breaks one rule on its own; the named shortcuts
(:meth:`TestCA.expired`, :meth:`TestCA.two_uri_sans`, …) cover the usual cases.
Never use these certificates outside tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ztid.bundle import Bundle, BundleSet
from ztid.devca import DevCA, _new_key, _now
from ztid.spiffeid import SpiffeId, TrustDomain

__all__ = ["Minted", "TestCA", "bundle_set"]

_DEFAULT = object()
_BOTH_EKU = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def _ku(*, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


@dataclass(frozen=True)
class Minted:
    """A certificate minted for a test, possibly broken on purpose.

    Attributes:
        leaf: the leaf certificate.
        key: the leaf's private key.
        chain: the chain as a peer would present it, leaf first.
    """

    leaf: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def chain_pem(self) -> bytes:
        """The presented chain as PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        """The leaf key as unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def bundle_set(*cas: DevCA) -> BundleSet:
    """A BundleSet holding the bundle of each CA."""
    return BundleSet(ca.bundle() for ca in cas)


class TestCA(DevCA):
    """A :class:`~ztid.devca.DevCA` with knobs to mint broken X509-SVIDs for tests."""

    __test__ = False  # not a pytest test class

    @classmethod
    def create(cls, trust_domain: TrustDomain | str = "test.example", *, intermediate: bool = False, ttl: dt.timedelta = dt.timedelta(days=1)) -> "TestCA":
        """A fresh test CA (see :meth:`DevCA.create`)."""
        ca = DevCA.create(trust_domain, intermediate=intermediate, ttl=ttl)
        return cls(ca.trust_domain, ca.root, ca.root_key, ca.jwt_key, ca.jwt_kid, ca.intermediate, ca.intermediate_key)

    def mint(
        self,
        spiffe_id: SpiffeId | str | None = None,
        *,
        uris: Sequence[str] | None = None,
        dns_names: Iterable[str] = (),
        ca: bool | None = False,
        key_usage: Any = _DEFAULT,
        eku: Sequence[x509.ObjectIdentifier] | None = _BOTH_EKU,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        self_signed: bool = False,
        signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
        include_intermediate: bool = True,
        tamper: bool = False,
        extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
        san_critical: bool = False,
        key_usage_critical: bool = True,
        eku_critical: bool = False,
        subject: x509.Name | None = None,
    ) -> Minted:
        """Mint a leaf exactly as asked, valid or not.

        Args:
            spiffe_id: the single URI SAN (any string, even an invalid ID); ignored when ``uris`` is given.
            uris: the exact URI SAN values (``[]`` for none, two for "two URI SANs").
            dns_names: DNS SANs.
            ca: basicConstraints cA; ``None`` omits the extension.
            key_usage: a ``KeyUsage``; ``None`` omits it; default digitalSignature only.
            eku: EKU OIDs; ``None`` omits the extension.
            not_before / not_after: validity (default now-1min … now+1h).
            self_signed: sign the leaf with its own key (issuer = subject).
            signer: (certificate, key) to sign with instead of this CA's signer.
            include_intermediate: leave the intermediate out of the chain when false.
            tamper: flip a bit of the signature.
            extra_extensions: more (extension, critical) pairs.
            san_critical: mark the SAN critical.
            key_usage_critical: mark keyUsage critical (X509-SVID §4.3 requires it).
            eku_critical: mark extendedKeyUsage critical (allowed by §4.4).
            subject: the subject name (default ``O=ztid test workload``).
        """
        now = _now()
        key = _new_key()
        values = list(uris) if uris is not None else ([str(spiffe_id)] if spiffe_id is not None else [])
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in values]
        sans += [x509.DNSName(d) for d in dns_names]
        issuer_cert, issuer_key = signer if signer is not None else self.signer
        name = subject if subject is not None else x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztid test workload")])
        b = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name if self_signed else issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=1))
            .not_valid_after(not_after or now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key((key if self_signed else issuer_key).public_key()), critical=False
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=san_critical)
        if ca is not None:
            b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        ku = _ku(digital_signature=True) if key_usage is _DEFAULT else key_usage
        if ku is not None:
            b = b.add_extension(ku, critical=key_usage_critical)
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
        for ext, critical in extra_extensions:
            b = b.add_extension(ext, critical=critical)
        leaf = b.sign(key if self_signed else issuer_key, hashes.SHA256())
        if tamper:
            leaf = self.tampered_copy(leaf)
        chain: tuple[x509.Certificate, ...] = (leaf,)
        if include_intermediate and not self_signed and signer is None and self.intermediate is not None:
            chain += (self.intermediate,)
        return Minted(leaf=leaf, key=key, chain=chain)

    # -- named broken cases ----------------------------------------------------------------------

    def _id(self, path: str = "/workload") -> str:
        return f"spiffe://{self.trust_domain.name}{path}"

    def expired(self, spiffe_id: str | None = None) -> Minted:
        """A leaf that expired an hour ago."""
        now = _now()
        return self.mint(spiffe_id or self._id(), not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(hours=1))

    def not_yet_valid(self, spiffe_id: str | None = None) -> Minted:
        """A leaf valid only from an hour from now."""
        now = _now()
        return self.mint(spiffe_id or self._id(), not_before=now + dt.timedelta(hours=1), not_after=now + dt.timedelta(hours=2))

    def self_signed(self, spiffe_id: str | None = None) -> Minted:
        """A leaf signed by its own key."""
        return self.mint(spiffe_id or self._id(), self_signed=True)

    def ca_leaf(self, spiffe_id: str | None = None) -> Minted:
        """A leaf with basicConstraints cA=true."""
        return self.mint(spiffe_id or self._id(), ca=True, key_usage=_ku(digital_signature=True, key_cert_sign=True))

    def two_uri_sans(self) -> Minted:
        """A leaf with two spiffe:// URI SANs."""
        return self.mint(uris=[self._id("/a"), self._id("/b")])

    def dns_only(self) -> Minted:
        """A leaf with a DNS SAN and no URI SAN."""
        return self.mint(uris=[], dns_names=["workload.example"])

    def root_path_id(self) -> Minted:
        """A leaf naming the trust domain itself (``spiffe://td``, no path)."""
        return self.mint(f"spiffe://{self.trust_domain.name}")

    def non_spiffe_uri(self) -> Minted:
        """A leaf whose only URI SAN is ``https://…``."""
        return self.mint(f"https://{self.trust_domain.name}/workload")

    def missing_intermediate(self, spiffe_id: str | None = None) -> Minted:
        """A leaf signed by the intermediate, presented without it (needs ``intermediate=True``)."""
        if self.intermediate is None:
            raise ValueError("missing_intermediate needs a TestCA created with intermediate=True")
        return self.mint(spiffe_id or self._id(), include_intermediate=False)

    def tampered(self, spiffe_id: str | None = None) -> Minted:
        """A leaf whose signature has one bit flipped."""
        return self.mint(spiffe_id or self._id(), tamper=True)

    def foreign(self, spiffe_id: str) -> Minted:
        """A leaf naming ``spiffe_id`` (say trust domain B) signed by this CA (trust domain A)."""
        return self.mint(spiffe_id)

    def with_bad_intermediate(self, *, ca: bool = True, key_cert_sign: bool = True, uri: str | None = None, name_constraints: x509.NameConstraints | None = None) -> Minted:
        """A leaf signed by a fresh intermediate (signed by the root) that may break the signing rules."""
        now = _now()
        ikey = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ztid test intermediate")])
        b = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.root.subject)
            .public_key(ikey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_ku(digital_signature=not key_cert_sign, key_cert_sign=key_cert_sign, crl_sign=key_cert_sign), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ikey.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri or str(self.trust_domain.id()))]), critical=False)
        )
        if name_constraints is not None:
            b = b.add_extension(name_constraints, critical=True)
        inter = b.sign(self.root_key, hashes.SHA256())
        leaf = self.mint(self._id(), signer=(inter, ikey))
        return Minted(leaf=leaf.leaf, key=leaf.key, chain=(leaf.leaf, inter))

    # -- static helpers ---------------------------------------------------------------------------

    @staticmethod
    def tampered_copy(cert: x509.Certificate) -> x509.Certificate:
        """The same certificate with the last bit of its signature flipped."""
        der = bytearray(cert.public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01
        return x509.load_der_x509_certificate(bytes(der))

    @staticmethod
    def key_usage(**flags: bool) -> x509.KeyUsage:
        """A KeyUsage with only the named flags set (digital_signature, key_cert_sign, crl_sign, key_encipherment)."""
        return _ku(**flags)

    def other_root(self) -> "TestCA":
        """A different CA for the same trust domain (same name, different key): a foreign root."""
        return TestCA.create(self.trust_domain)

    def bundle_without_root(self) -> Bundle:
        """This CA's bundle with the root removed (no X.509 authorities left)."""
        return self.bundle().without_x509_authority(self.root)
