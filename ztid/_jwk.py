"""JWK helpers for SPIFFE bundles: public key <-> JWK, base64url, strict JSON, one bundle element.

Kept apart from ztid.bundle so the bundle module holds only the Bundle/BundleSet model; the
JWT-SVID code may reuse :func:`jwk_public_key` and :func:`public_jwk`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ztid.errors import BundleError

__all__ = ["b64url", "b64url_decode", "is_ca", "jwk_public_key", "public_jwk", "read_jwk"]

_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {cls.name: crv for crv, (cls, _) in _CURVES.items()}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def b64url_decode(value: object) -> bytes:
    """Decode unpadded base64url; ValueError for anything else (padding, other alphabets, non-str)."""
    if not isinstance(value, str) or not value or "=" in value:
        raise ValueError("not an unpadded base64url string")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not an unpadded base64url string") from exc


def b64url(data: bytes) -> str:
    """Encode as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries basicConstraints cA=true (false when absent or malformed)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # a malformed extension
        return False


def public_jwk(key: PublicKeyTypes) -> dict[str, str]:
    """The public JWK members (kty, crv/x/y or n/e) of an EC or RSA key.

    Raises:
        BundleError: another key type or curve.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(key.curve.name)
        if crv is None:
            raise BundleError(f"unsupported EC curve {key.curve.name!r} for a JWK")
        size = _CURVES[crv][1]
        nums = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64url(nums.x.to_bytes(size, "big")), "y": b64url(nums.y.to_bytes(size, "big"))}
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return {
            "kty": "RSA",
            "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
            "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")),
        }
    raise BundleError(f"unsupported key type {type(key).__name__} for a SPIFFE bundle (EC or RSA only)")


def jwk_public_key(jwk: Mapping[str, Any]) -> PublicKeyTypes:
    """Build a public key from an EC or RSA JWK; ValueError says what is wrong."""
    kty = jwk.get("kty")
    if kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _CURVES:
            raise ValueError(f"unsupported crv {crv!r}")
        curve_cls, size = _CURVES[crv]
        x, y = b64url_decode(jwk.get("x")), b64url_decode(jwk.get("y"))
        if len(x) != size or len(y) != size:
            raise ValueError(f"x and y must be {size} bytes for {crv}")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), b"\x04" + x + y)
    if kty == "RSA":
        n, e = b64url_decode(jwk.get("n")), b64url_decode(jwk.get("e"))
        if n[:1] == b"\x00" or e[:1] == b"\x00":
            raise ValueError("n and e must be minimal big-endian integers")
        n_int, e_int = int.from_bytes(n, "big"), int.from_bytes(e, "big")
        if n_int.bit_length() < 2048:
            raise ValueError(f"RSA modulus of {n_int.bit_length()} bits is too small (minimum 2048)")
        return rsa.RSAPublicNumbers(e_int, n_int).public_key()
    raise ValueError(f"unsupported kty {kty!r}")



def read_jwk(jwk: object, cas: list[x509.Certificate], jwt: dict[str, PublicKeyTypes]) -> str:
    """Add one JWK to ``cas``/``jwt``; return why it was ignored ('' when used)."""
    if not isinstance(jwk, dict):
        return f"ignored: not a JSON object ({type(jwk).__name__})"
    kty, use = jwk.get("kty"), jwk.get("use")
    if not isinstance(kty, str) or not kty:
        return "ignored: kty is missing"
    if use not in ("x509-svid", "jwt-svid"):
        return f"ignored: use {use!r} is not x509-svid or jwt-svid"
    if kty not in ("EC", "RSA"):
        return f"ignored: unsupported kty {kty!r}"
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        return f"ignored malformed {use} key: it carries private key members"
    if use == "x509-svid":
        x5c = jwk.get("x5c")
        if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
            return "ignored malformed x509-svid key: x5c must hold exactly one certificate"
        try:
            der = base64.b64decode(x5c[0], validate=True)
            cert = x509.load_der_x509_certificate(der)
            if cert.public_bytes(serialization.Encoding.DER) != der:
                raise ValueError("trailing data")
            spki = public_jwk(cert.public_key())
        except (binascii.Error, ValueError, BundleError) as exc:
            return f"ignored malformed x509-svid key: x5c[0] is not a base64 DER certificate ({exc})"
        if spki["kty"] != kty or any(k in jwk and jwk[k] != v for k, v in spki.items()):
            return "ignored malformed x509-svid key: key parameters do not match the x5c certificate"
        if not is_ca(cert):
            return "ignored malformed x509-svid key: the x5c certificate is not a CA (basicConstraints cA=false)"
        cas.append(cert)
        return ""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return "ignored malformed jwt-svid key: kid is missing or empty"
    try:
        key = jwk_public_key(jwk)
    except (ValueError, TypeError) as exc:
        return f"ignored malformed jwt-svid key {kid!r}: {exc}"
    if kid in jwt:
        raise BundleError(f"SPIFFE bundle: two jwt-svid keys share kid {kid!r}")
    jwt[kid] = key
    return ""
