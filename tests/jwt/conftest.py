"""Fixtures for the JWT-SVID tests: keys minted at run time, real Bundle/BundleSet objects, and a
token signer written independently of ztid.jwtsvid (so a shared mistake cannot hide)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import types

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from ztid.bundle import Bundle, BundleSet

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
NOW_TS = int(NOW.timestamp())
TD_A = "a.example"
TD_B = "b.example"
SUB_A = f"spiffe://{TD_A}/ns/prod/sa/trainer"
SUB_B = f"spiffe://{TD_B}/ns/prod/sa/trainer"
AUD = "spiffe://a.example/registry"

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_EC_COORD = {"256": 32, "384": 48, "512": 66}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode(part: dict[str, Any] | bytes | str) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode("utf-8")
    return json.dumps(part, separators=(",", ":")).encode("utf-8")


def raw_signature(alg: str, key: Any, data: bytes) -> bytes:
    """Sign ``data`` as JWS ``alg`` (RFC 7518 §3) with ``key``; independent of ztid."""
    family, bits = alg[:2], alg[2:]
    h = _HASHES[bits]() if bits in _HASHES else None
    if family == "ES":
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        n = _EC_COORD[bits]
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")
    if family == "RS":
        return key.sign(data, padding.PKCS1v15(), h)
    if family == "PS":
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if family == "HS":
        mac = hmac.HMAC(key, h)
        mac.update(data)
        return mac.finalize()
    if alg == "EdDSA":
        return key.sign(data)
    if alg == "none":
        return b""
    raise AssertionError(f"test signer does not know {alg}")


def sign(header: dict[str, Any] | bytes | str, payload: dict[str, Any] | bytes | str, key: Any, alg: str | None = None) -> str:
    """Build a compact JWS from a header and payload (dicts are JSON-encoded; bytes used as they are)."""
    if alg is None:
        assert isinstance(header, dict)
        alg = header["alg"]
    signing_input = f"{b64(_encode(header))}.{b64(_encode(payload))}"
    return f"{signing_input}.{b64(raw_signature(alg, key, signing_input.encode('ascii')))}"


def independent_verify(token: str, public_key: Any, alg: str) -> bool:
    """Check a token's signature without ztid (used to check what ztid mints)."""
    h_b64, p_b64, s_b64 = token.split(".")
    data, sig = f"{h_b64}.{p_b64}".encode("ascii"), unb64(s_b64)
    h = _HASHES[alg[2:]]()
    try:
        if alg.startswith("ES"):
            n = len(sig) // 2
            der = utils.encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
            public_key.verify(der, data, ec.ECDSA(h))
        elif alg.startswith("RS"):
            public_key.verify(sig, data, padding.PKCS1v15(), h)
        else:
            public_key.verify(sig, data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Keys:
    """Private keys by role. Trust domain A's bundle holds the public halves under these kids."""

    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    ec521: ec.EllipticCurvePrivateKey
    rsa2048: rsa.RSAPrivateKey
    rsa1024: rsa.RSAPrivateKey
    ed25519: ed25519.Ed25519PrivateKey
    b_ec256: ec.EllipticCurvePrivateKey  # trust domain B's key
    b_shared: ec.EllipticCurvePrivateKey  # B's key under kid "shared" (A has its own "shared")

    def for_alg(self, alg: str) -> tuple[str, Any]:
        """The kid in A's bundle and private key that fit ``alg``."""
        return {
            "ES256": ("a-ec256", self.ec256), "ES384": ("a-ec384", self.ec384), "ES512": ("a-ec521", self.ec521),
        }.get(alg, ("a-rsa2048", self.rsa2048))


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        ec256=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ec521=ec.generate_private_key(ec.SECP521R1()),
        rsa2048=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa1024=rsa.generate_private_key(public_exponent=65537, key_size=1024),
        ed25519=ed25519.Ed25519PrivateKey.generate(),
        b_ec256=ec.generate_private_key(ec.SECP256R1()),
        b_shared=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture(scope="session")
def bundle_a(keys: Keys) -> Bundle:
    return Bundle(TD_A, (), {
        "a-ec256": keys.ec256.public_key(),
        "a-ec384": keys.ec384.public_key(),
        "a-ec521": keys.ec521.public_key(),
        "a-rsa2048": keys.rsa2048.public_key(),
        "a-rsa1024": keys.rsa1024.public_key(),
        "shared": keys.ec256.public_key(),
    })


@pytest.fixture(scope="session")
def bundle_b(keys: Keys) -> Bundle:
    return Bundle(TD_B, (), {"b-ec256": keys.b_ec256.public_key(), "shared": keys.b_shared.public_key()})


@pytest.fixture(scope="session")
def bundles(bundle_a: Bundle, bundle_b: Bundle) -> BundleSet:
    """Both trust domains loaded: the setting where cross-domain confusion would show."""
    return BundleSet([bundle_a, bundle_b])


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid payload for trust domain A at NOW; ``name=DROP`` removes a claim."""
    base: dict[str, Any] = {"sub": SUB_A, "aud": AUD, "exp": NOW_TS + 300, "iat": NOW_TS - 10}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


@pytest.fixture(scope="session")
def make_token(keys: Keys) -> Callable[..., str]:
    """make_token(alg="ES256", kid=<A's key for alg>, key=<its private key>, header_extra=..., **claims)."""

    def make(alg: str = "ES256", *, kid: Any = None, key: Any = None, header: dict[str, Any] | None = None,
             payload: dict[str, Any] | bytes | None = None, **claim_overrides: Any) -> str:
        default_kid, default_key = keys.for_alg(alg)
        hdr: dict[str, Any] = {"alg": alg, "kid": default_kid if kid is None else kid, "typ": "JWT"}
        hdr.update(header or {})
        hdr = {k: v for k, v in hdr.items() if v is not DROP}
        body = payload if payload is not None else claims(**claim_overrides)
        return sign(hdr, body, default_key if key is None else key, alg)

    return make


@pytest.fixture(scope="session")
def kit(keys: Keys, make_token: Callable[..., str], bundles: BundleSet, bundle_a: Bundle, bundle_b: Bundle) -> types.SimpleNamespace:
    """Everything a test module needs in one name (test modules cannot import conftest)."""
    return types.SimpleNamespace(
        NOW=NOW, NOW_TS=NOW_TS, TD_A=TD_A, TD_B=TD_B, SUB_A=SUB_A, SUB_B=SUB_B, AUD=AUD, DROP=DROP,
        keys=keys, make=make_token, sign=sign, claims=claims, b64=b64, unb64=unb64,
        raw_signature=raw_signature, independent_verify=independent_verify,
        bundles=bundles, bundle_a=bundle_a, bundle_b=bundle_b,
    )
