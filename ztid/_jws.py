"""JWS signatures for JWT-SVIDs: the nine algorithms of JWT-SVID §2.1, which key fits each, verify and sign.

ECDSA signatures are the raw ``r || s`` of RFC 7518 §3.4 (fixed length per curve), not DER;
RSA keys must have at least 2048 bits. Kept apart from :mod:`ztid.jwtsvid` (token and claim
rules) so the cryptography lives in one place; errors carry the same ``JWT-SVID rejected:``
prefix as the validator's own.
"""

from __future__ import annotations

import reprlib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ztid.errors import UsageError, VerificationError

_MIN_RSA_BITS: Final = 2048
_REPR: Final = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 80, 80, 6, 6


@dataclass(frozen=True, slots=True)
class _Alg:
    hash: type[hashes.HashAlgorithm]
    family: str  # "EC", "RSA" (PKCS#1 v1.5) or "PSS"
    curve: type[ec.EllipticCurve] | None = None
    coord: int = 0  # ECDSA: bytes per coordinate in the raw r || s signature


_ALGS: Final[Mapping[str, _Alg]] = types.MappingProxyType({
    "RS256": _Alg(hashes.SHA256, "RSA"),
    "RS384": _Alg(hashes.SHA384, "RSA"),
    "RS512": _Alg(hashes.SHA512, "RSA"),
    "ES256": _Alg(hashes.SHA256, "EC", ec.SECP256R1, 32),
    "ES384": _Alg(hashes.SHA384, "EC", ec.SECP384R1, 48),
    "ES512": _Alg(hashes.SHA512, "EC", ec.SECP521R1, 66),
    "PS256": _Alg(hashes.SHA256, "PSS"),
    "PS384": _Alg(hashes.SHA384, "PSS"),
    "PS512": _Alg(hashes.SHA512, "PSS"),
})
ALGORITHMS: Final = frozenset(_ALGS)
"""The nine ``alg`` values of JWT-SVID §2.1; every other value is rejected."""
_ALG_LIST: Final = ", ".join(sorted(_ALGS))
_CURVE_ALG: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _deny(why: str) -> VerificationError:
    return VerificationError(f"JWT-SVID rejected: {why}")


def _q(value: object) -> str:
    """Quote a token-supplied value for a message: bounded in length and depth, one printable line."""
    return _REPR.repr(value)


def _check_key(key: object, alg: str, kid: str) -> None:
    spec = _ALGS[alg]
    if spec.family == "EC":
        fits = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, spec.curve)  # type: ignore[arg-type]
        needs = f"an EC {spec.curve.name} key"  # type: ignore[union-attr]
    else:
        fits = isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS
        needs = f"an RSA key of at least {_MIN_RSA_BITS} bits"
    if not fits:
        kind = (f"an EC {key.curve.name} key" if isinstance(key, ec.EllipticCurvePublicKey)
                else f"a {key.key_size}-bit RSA key" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__)
        raise _deny(f"kid {_q(kid)} is {kind}; {alg} needs {needs}")


def _verify_signature(key: Any, alg: str, signature: bytes, signing_input: bytes) -> None:
    spec = _ALGS[alg]
    try:
        if spec.family == "EC":
            if len(signature) != 2 * spec.coord:
                raise _deny(f"{alg} signature is {len(signature)} bytes; expected {2 * spec.coord} (raw r || s)")
            r = int.from_bytes(signature[: spec.coord], "big")
            s = int.from_bytes(signature[spec.coord:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(spec.hash()))
            return
        expected = (key.key_size + 7) // 8
        if len(signature) != expected:
            raise _deny(f"{alg} signature is {len(signature)} bytes; expected {expected} for this key")
        pad = (padding.PKCS1v15() if spec.family == "RSA"
               else padding.PSS(mgf=padding.MGF1(spec.hash()), salt_length=spec.hash.digest_size))
        key.verify(signature, signing_input, pad, spec.hash())
    except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
        raise _deny("signature does not verify") from exc


def _default_alg(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _CURVE_ALG.get(key.curve.name)
        if alg is None:
            raise UsageError(f"EC curve {key.curve.name} has no JWT-SVID algorithm; use P-256, P-384 or P-521")
        return alg
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise UsageError(f"key must be an EC or RSA private key, not {type(key).__name__}")


def _sign(key: Any, alg: str, data: bytes) -> bytes:
    spec = _ALGS[alg]
    if spec.family == "EC":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(spec.hash())))
        return r.to_bytes(spec.coord, "big") + s.to_bytes(spec.coord, "big")
    if spec.family == "RSA":
        return key.sign(data, padding.PKCS1v15(), spec.hash())  # type: ignore[no-any-return]
    return key.sign(data, padding.PSS(mgf=padding.MGF1(spec.hash()), salt_length=spec.hash.digest_size), spec.hash())  # type: ignore[no-any-return]
