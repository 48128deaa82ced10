"""Trust bundle file formats: read PEM and SPIFFE bundle (JWK Set) bytes into parts, and write them back.

Two file formats are read and written:

* **PEM**: concatenated ``CERTIFICATE`` blocks, each a CA certificate (``basicConstraints cA=true``).
  The trust domain is read from the certificates' SPIFFE ID URI SAN (``spiffe://<td>``) unless
  ``trust_domain=`` names it; certificates naming two trust domains, or naming another one than
  ``trust_domain=``, are a :class:`~ztid.errors.BundleError`. PEM carries no JWT keys.
* **SPIFFE bundle** (SPIFFE Trust Domain and Bundle §4, a JWK Set): ``keys`` (required, may be
  empty), optional ``spiffe_sequence`` and ``spiffe_refresh_hint`` (non-negative integers).
  ``use: "x509-svid"`` entries carry exactly one CA certificate in ``x5c``; ``use: "jwt-svid"``
  entries carry an EC (P-256/384/521) or RSA public key and a non-empty ``kid``.
  Element-wise leniency (spec §4.1.3, §4.2): an element with an unknown or missing ``kty``/``use``
  is ignored, and so is a *malformed* element of a known use (bad ``x5c``, no ``kid``, a bad key,
  private key members). Every ignored element is described in :attr:`ztid.bundle.Bundle.skipped`.
  Anything else wrong (not JSON, duplicate JSON keys, ``keys`` missing or not a list, a bad sequence
  or refresh hint, two JWT keys with one ``kid``) rejects the whole file.

The readers return plain parts; :class:`ztid.bundle.Bundle` checks and holds them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ztid import _strictjson
from ztid._jwk import is_ca, public_jwk, read_jwk
from ztid.errors import BundleError, IdentityError
from ztid.spiffeid import SpiffeId, TrustDomain

__all__ = ["JwksParts", "read_jwks", "read_pem", "write_jwks", "write_pem"]

_MAX_SEQUENCE = 2**64 - 1


def _as_td(trust_domain: TrustDomain | str) -> TrustDomain:
    if isinstance(trust_domain, TrustDomain):
        return trust_domain
    try:
        return TrustDomain.parse(trust_domain)
    except (IdentityError, TypeError) as exc:
        raise BundleError(f"invalid trust domain for bundle: {exc}") from exc


def _cert_trust_domains(cert: x509.Certificate) -> set[TrustDomain]:
    """Trust domains named by a CA certificate's ``spiffe://`` URI SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    except ValueError as exc:
        raise BundleError(f"CA certificate {cert.subject.rfc4514_string()!r} has a malformed SAN: {exc}") from exc
    found = set()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("spiffe:"):
            try:
                found.add(SpiffeId.parse(uri).trust_domain)
            except IdentityError as exc:
                raise BundleError(f"CA certificate names a malformed SPIFFE ID: {exc}") from exc
    return found


def _resolve_trust_domain(certs: Iterable[x509.Certificate], given: TrustDomain | str | None, what: str) -> TrustDomain:
    named: set[TrustDomain] = set()
    for cert in certs:
        named |= _cert_trust_domains(cert)
    if len(named) > 1:
        names = ", ".join(sorted(td.name for td in named))
        raise BundleError(f"{what}: CA certificates name different trust domains ({names}); one bundle holds one trust domain")
    if given is not None:
        td = _as_td(given)
        if named and td not in named:
            raise BundleError(f"{what}: CA certificates name trust domain {next(iter(named)).name!r}, not {td.name!r}")
        return td
    if not named:
        raise BundleError(f"{what}: cannot tell the trust domain (no CA certificate carries a spiffe:// URI SAN); pass trust_domain=")
    return next(iter(named))


def _check_int(doc: Mapping[str, Any], name: str) -> int | None:
    if name not in doc:
        return None
    value = doc[name]
    if type(value) is not int or not 0 <= value <= _MAX_SEQUENCE:
        raise BundleError(f"SPIFFE bundle: {name} must be an integer from 0 to 2^64-1, got {value!r}")
    return value


def read_pem(data: bytes, trust_domain: TrustDomain | str | None) -> tuple[TrustDomain, list[x509.Certificate]]:
    """The trust domain and CA certificates of a PEM bundle.

    Raises:
        BundleError: not PEM, no certificate, a non-CA certificate, or an unclear trust domain.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise BundleError(f"PEM bundle must be bytes, not {type(data).__name__}")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BundleError("PEM bundle holds no CERTIFICATE block")
    try:
        certs = x509.load_pem_x509_certificates(bytes(data))
    except ValueError as exc:
        raise BundleError(f"PEM bundle is malformed: {exc}") from exc
    for i, cert in enumerate(certs):
        if not is_ca(cert):
            raise BundleError(f"PEM bundle certificate #{i + 1} ({cert.subject.rfc4514_string()!r}) is not a CA (basicConstraints cA must be true)")
    return _resolve_trust_domain(certs, trust_domain, "PEM bundle"), certs


class JwksParts(NamedTuple):
    """What a SPIFFE bundle document holds, read but not yet checked as a whole bundle."""

    trust_domain: TrustDomain
    x509_authorities: list[x509.Certificate]
    jwt_authorities: dict[str, PublicKeyTypes]
    sequence: int | None
    refresh_hint: int | None
    skipped: list[str]


def read_jwks(data: bytes | str, trust_domain: TrustDomain | str | None) -> JwksParts:
    """The parts of a SPIFFE bundle (JWK Set); the trust domain is ``trust_domain`` or the CAs' own.

    Raises:
        BundleError: the document is malformed (see the module docstring for what is ignored instead).
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"SPIFFE bundle is not UTF-8: {exc}") from exc
    elif isinstance(data, str):
        text = data
    else:
        raise BundleError(f"SPIFFE bundle must be bytes or str, not {type(data).__name__}")
    try:
        doc = _strictjson.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"SPIFFE bundle is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError("SPIFFE bundle must be a JSON object")
    if "keys" not in doc:
        raise BundleError("SPIFFE bundle has no 'keys' member (it is required, and may be an empty list)")
    keys = doc["keys"]
    if not isinstance(keys, list):
        raise BundleError(f"SPIFFE bundle 'keys' must be a list, not {type(keys).__name__}")
    sequence = _check_int(doc, "spiffe_sequence")
    refresh_hint = _check_int(doc, "spiffe_refresh_hint")
    cas: list[x509.Certificate] = []
    jwt: dict[str, PublicKeyTypes] = {}
    skipped: list[str] = []
    for i, jwk in enumerate(keys):
        why = read_jwk(jwk, cas, jwt)
        if why:
            skipped.append(f"keys[{i}]: {why}")
    td = _resolve_trust_domain(cas, trust_domain, "SPIFFE bundle")
    return JwksParts(td, cas, jwt, sequence, refresh_hint, skipped)


def write_pem(x509_authorities: Iterable[x509.Certificate]) -> bytes:
    """CA certificates as concatenated PEM blocks."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in x509_authorities)


def write_jwks(
    x509_authorities: Iterable[x509.Certificate],
    jwt_authorities: Mapping[str, PublicKeyTypes],
    sequence: int | None,
    refresh_hint: int | None,
) -> bytes:
    """A SPIFFE bundle document (JSON, UTF-8, sorted keys, JWT keys in ``kid`` order)."""
    keys: list[dict[str, Any]] = []
    for cert in x509_authorities:
        jwk: dict[str, Any] = dict(public_jwk(cert.public_key()))
        jwk["use"] = "x509-svid"
        jwk["x5c"] = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")]
        keys.append(jwk)
    for kid, key in sorted(jwt_authorities.items()):
        jwk = dict(public_jwk(key))
        jwk["use"] = "jwt-svid"
        jwk["kid"] = kid
        keys.append(jwk)
    doc: dict[str, Any] = {"keys": keys}
    if sequence is not None:
        doc["spiffe_sequence"] = sequence
    if refresh_hint is not None:
        doc["spiffe_refresh_hint"] = refresh_hint
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
