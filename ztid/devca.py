"""A local development CA for one trust domain: mints X509-SVIDs and signs JWT-SVIDs.

Not for production: keys live in files. Layout of a saved CA directory::

    bundle.pem            the trust bundle (root CA certificate), for peers to verify against
    bundle.json           the SPIFFE bundle (root + JWT key), JWK Set format
    ca.pem / ca.key       root CA certificate and key (key 0600)
    intermediate.pem/.key optional intermediate CA that signs the leaves (key 0600)
    jwt.key / jwt.kid     JWT-SVID signing key (0600) and its key id

Certificates: EC P-256 keys, ECDSA-SHA256. The root has cA=true, keyCertSign+cRLSign (critical),
URI SAN ``spiffe://<td>``, SKI/AKI. The intermediate adds pathLenConstraint=0. Leaves have one
URI SAN (plus optional DNS names), cA=false, digitalSignature only, EKU serverAuth+clientAuth,
SKI/AKI, a default TTL of one hour, and never outlive their issuer.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ztid.bundle import Bundle
from ztid.errors import ConfigError, KeyringError, UsageError
from ztid.spiffeid import SpiffeId, TrustDomain
from ztid.svid import X509Svid

__all__ = ["DevCA"]

_BACKDATE = dt.timedelta(seconds=60)  # tolerate small clock skew between peers
_KEY_FILES = ("ca.key", "intermediate.key", "jwt.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca_cert(
    td: TrustDomain,
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztid dev CA"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(td.id()))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    return b.sign(issuer_key, hashes.SHA256())


def write_file(path: Path, data: bytes, *, secret: bool) -> None:
    """Write ``data`` to ``path`` (0600 when ``secret``, else 0644), not following a symlink."""
    mode = 0o600 if secret else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class DevCA:
    """A development CA for one trust domain (root, optional intermediate, JWT signing key).

    Create with :meth:`create`, persist with :meth:`save`, reopen with :meth:`load`.
    """

    def __init__(
        self,
        trust_domain: TrustDomain,
        root: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        jwt_key: ec.EllipticCurvePrivateKey,
        jwt_kid: str,
        intermediate: x509.Certificate | None = None,
        intermediate_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self.root = root
        self.root_key = root_key
        self.intermediate = intermediate
        self.intermediate_key = intermediate_key
        self.jwt_key = jwt_key
        self.jwt_kid = jwt_kid

    @classmethod
    def create(cls, trust_domain: TrustDomain | str, *, intermediate: bool = False, ttl: dt.timedelta = dt.timedelta(days=1)) -> "DevCA":
        """A fresh CA for ``trust_domain`` valid for ``ttl``.

        Raises:
            IdentityError: ``trust_domain`` is malformed.
            UsageError: ``ttl`` is not positive.
        """
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        if not isinstance(ttl, dt.timedelta) or ttl <= dt.timedelta(0):
            raise UsageError(f"CA ttl must be a positive timedelta, got {ttl!r}")
        now = _now()
        root_key = _new_key()
        root = _ca_cert(td, f"ztid dev root {td.name}"[:64], root_key, None, root_key, now - _BACKDATE, now + ttl, None)
        inter = inter_key = None
        if intermediate:
            inter_key = _new_key()
            inter = _ca_cert(td, f"ztid dev intermediate {td.name}"[:64], inter_key, root, root_key, now - _BACKDATE, now + ttl, 0)
        return cls(td, root, root_key, _new_key(), secrets.token_urlsafe(16), inter, inter_key)

    # -- issuing -------------------------------------------------------------------------------

    @property
    def signer(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The certificate and key that sign leaves (the intermediate when present)."""
        if self.intermediate is not None and self.intermediate_key is not None:
            return self.intermediate, self.intermediate_key
        return self.root, self.root_key

    def _leaf_builder(
        self,
        uris: Sequence[str],
        public_key: ec.EllipticCurvePublicKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
        dns_names: Iterable[str],
    ) -> x509.CertificateBuilder:
        issuer, issuer_key = self.signer
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns_names]
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztid dev workload")]))
            .issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return (
            b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )

    def _validity(self, ttl: dt.timedelta, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
        if not isinstance(ttl, dt.timedelta) or ttl <= dt.timedelta(0):
            raise UsageError(f"SVID ttl must be a positive timedelta, got {ttl!r}")
        if not_before is not None and (not isinstance(not_before, dt.datetime) or not_before.tzinfo is None):
            raise UsageError("not_before must be a timezone-aware datetime")
        start = not_before.astimezone(dt.timezone.utc) if not_before is not None else _now() - _BACKDATE
        issuer_end = min(self.root.not_valid_after_utc, self.signer[0].not_valid_after_utc)
        return start, min(start + ttl + (_BACKDATE if not_before is None else dt.timedelta(0)), issuer_end)

    def issue(
        self,
        spiffe_id: SpiffeId | str,
        *,
        ttl: dt.timedelta = dt.timedelta(hours=1),
        not_before: dt.datetime | None = None,
        dns_names: Iterable[str] = (),
    ) -> X509Svid:
        """Mint an X509-SVID for ``spiffe_id`` (a member of this CA's trust domain).

        Raises:
            IdentityError: ``spiffe_id`` is malformed.
            UsageError: the ID is in another trust domain, has no path, or ``ttl`` is not positive.
        """
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise UsageError(f"this CA issues for trust domain {self.trust_domain.name!r}, not {sid.trust_domain.name!r}")
        if not sid.path:
            raise UsageError(f"an X509-SVID needs a SPIFFE ID with a path, not {str(sid)!r}")
        start, end = self._validity(ttl, not_before)
        key = _new_key()
        cert = self._leaf_builder([str(sid)], key.public_key(), start, end, dns_names).sign(self.signer[1], hashes.SHA256())
        chain = (cert,) + ((self.intermediate,) if self.intermediate is not None else ())
        return X509Svid.from_parts(chain, key)

    def bundle(self) -> Bundle:
        """The trust bundle: the root certificate and the JWT key."""
        return Bundle(self.trust_domain, (self.root,), {self.jwt_kid: self.jwt_key.public_key()})

    def mint_jwt(self, spiffe_id: SpiffeId | str, audience: str | Iterable[str], *, ttl: dt.timedelta = dt.timedelta(minutes=5)) -> str:
        """Sign a JWT-SVID for ``spiffe_id`` with this CA's JWT key (delegates to ztid.jwtsvid).

        Raises:
            IdentityError: ``spiffe_id`` is malformed.
            UsageError: the ID is in another trust domain, or a bad audience/ttl.
        """
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise UsageError(f"this CA signs for trust domain {self.trust_domain.name!r}, not {sid.trust_domain.name!r}")
        from ztid.jwtsvid import mint_jwt_svid

        return mint_jwt_svid(sid, key=self.jwt_key, kid=self.jwt_kid, audience=audience, ttl=ttl)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the CA to ``directory`` (created 0700 if missing); key files are 0600.

        Raises:
            UsageError: the directory already holds a CA and ``overwrite`` is false.
            ConfigError: the directory cannot be written.
        """
        d = Path(directory)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not overwrite and (d / "ca.key").exists():
                raise UsageError(f"{d} already holds a CA (ca.key exists); refusing to overwrite it")
            files = {
                "ca.pem": (self.root.public_bytes(serialization.Encoding.PEM), False),
                "ca.key": (_pem_key(self.root_key), True),
                "jwt.key": (_pem_key(self.jwt_key), True),
                "jwt.kid": (self.jwt_kid.encode("ascii") + b"\n", False),
                "bundle.pem": (self.bundle().to_pem(), False),
                "bundle.json": (self.bundle().to_jwks(), False),
            }
            if self.intermediate is not None and self.intermediate_key is not None:
                files["intermediate.pem"] = (self.intermediate.public_bytes(serialization.Encoding.PEM), False)
                files["intermediate.key"] = (_pem_key(self.intermediate_key), True)
            for name, (data, secret) in files.items():
                write_file(d / name, data, secret=secret)
        except OSError as exc:
            raise ConfigError(f"cannot write CA directory: {exc.strerror or exc}", location=str(d)) from exc
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "DevCA":
        """Reopen a CA written by :meth:`save`.

        Raises:
            ConfigError: a file is missing or malformed.
            KeyringError: a key file is readable by group or others.
        """
        d = Path(directory)

        def read(name: str, *, secret: bool = False) -> bytes:
            p = d / name
            try:
                if secret and os.stat(p).st_mode & 0o077:
                    raise KeyringError(f"{p}: key file is accessible by group or others (chmod 600 it)")
                return p.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {name}: {exc.strerror or exc}", location=str(d)) from exc

        def cert(name: str) -> x509.Certificate:
            try:
                return x509.load_pem_x509_certificate(read(name))
            except ValueError as exc:
                raise ConfigError(f"{name} is not a PEM certificate: {exc}", location=str(d)) from exc

        def key(name: str) -> ec.EllipticCurvePrivateKey:
            try:
                k = serialization.load_pem_private_key(read(name, secret=True), password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name} is not an unencrypted PEM key: {exc}", location=str(d)) from exc
            if not isinstance(k, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"{name} must be an EC key", location=str(d))
            return k

        root, root_key = cert("ca.pem"), key("ca.key")
        try:
            td = Bundle.from_pem(root.public_bytes(serialization.Encoding.PEM)).trust_domain
        except Exception as exc:  # BundleError: no/odd URI SAN
            raise ConfigError(f"ca.pem does not name a trust domain: {exc}", location=str(d)) from exc
        inter = inter_key = None
        if (d / "intermediate.pem").exists():
            inter, inter_key = cert("intermediate.pem"), key("intermediate.key")
        kid = read("jwt.kid").decode("ascii", "replace").strip()
        if not kid:
            raise ConfigError("jwt.kid is empty", location=str(d))
        ca = cls(td, root, root_key, key("jwt.key"), kid, inter, inter_key)
        for c, k, name in ((root, root_key, "ca"), (inter, inter_key, "intermediate")):
            if c is not None and k is not None and _spki(c.public_key()) != _spki(k.public_key()):
                raise ConfigError(f"{name}.key does not match {name}.pem", location=str(d))
        return ca

    def __repr__(self) -> str:
        return f"DevCA({self.trust_domain.name!r}, intermediate={self.intermediate is not None}, jwt_kid={self.jwt_kid!r})"

