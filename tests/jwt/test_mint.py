"""mint_jwt_svid: what it writes (checked without ztid's validator too) and what it refuses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ztid.bundle import Bundle, BundleSet
from ztid.errors import IdentityError, UsageError
from ztid.jwtsvid import mint_jwt_svid, validate_jwt_svid
from ztid.spiffeid import SpiffeId


def parts(kit, token: str) -> tuple[dict, dict]:
    h, p, _ = token.split(".")
    return json.loads(kit.unb64(h)), json.loads(kit.unb64(p))


@pytest.mark.parametrize(("key_attr", "algorithm", "expected_alg"), [
    ("ec256", None, "ES256"), ("ec384", None, "ES384"), ("ec521", None, "ES512"), ("rsa2048", None, "RS256"),
    ("rsa2048", "RS384", "RS384"), ("rsa2048", "RS512", "RS512"),
    ("rsa2048", "PS256", "PS256"), ("rsa2048", "PS384", "PS384"), ("rsa2048", "PS512", "PS512"),
])
def test_minted_tokens_verify_independently_and_with_ztid(kit, key_attr, algorithm, expected_alg):
    key = getattr(kit.keys, key_attr)
    token = mint_jwt_svid(kit.SUB_A, key=key, kid="k1", audience=kit.AUD, now=kit.NOW, algorithm=algorithm)
    header, claims = parts(kit, token)
    assert header == {"alg": expected_alg, "kid": "k1", "typ": "JWT"}  # JWT-SVID §2: no other header
    assert claims == {"sub": kit.SUB_A, "aud": kit.AUD, "exp": kit.NOW_TS + 300, "iat": kit.NOW_TS}
    assert kit.independent_verify(token, key.public_key(), expected_alg)
    bundles = BundleSet([Bundle(kit.TD_A, (), {"k1": key.public_key()})])
    got = validate_jwt_svid(token, bundles, kit.AUD, at=kit.NOW)
    assert got.spiffe_id == SpiffeId.parse(kit.SUB_A) and got.algorithm == expected_alg


def test_ecdsa_signatures_are_raw_r_s_of_fixed_length(kit):
    for key, size in ((kit.keys.ec256, 64), (kit.keys.ec384, 96), (kit.keys.ec521, 132)):
        for _ in range(8):  # DER would vary in length; raw r || s never does
            token = mint_jwt_svid(kit.SUB_A, key=key, kid="k", audience="a", now=kit.NOW)
            assert len(kit.unb64(token.split(".")[2])) == size


def test_audience_list_keeps_order_and_drops_repeats(kit):
    token = mint_jwt_svid(kit.SUB_A, key=kit.keys.ec256, kid="k", audience=["b", "a", "b"], now=kit.NOW)
    assert parts(kit, token)[1]["aud"] == ["b", "a"]
    token = mint_jwt_svid(kit.SUB_A, key=kit.keys.ec256, kid="k", audience=["only"], now=kit.NOW)
    assert parts(kit, token)[1]["aud"] == "only"


def test_ttl_and_now_set_exp_and_iat(kit):
    now = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=timezone(timedelta(hours=2)))
    token = mint_jwt_svid(SpiffeId.parse(kit.SUB_A), key=kit.keys.ec256, kid="k", audience="a", ttl=timedelta(hours=1),
                          now=now)
    claims = parts(kit, token)[1]
    assert claims["iat"] == int(now.timestamp()) and claims["exp"] == int(now.timestamp()) + 3600


def test_default_now_is_the_current_time(kit):
    before = datetime.now(timezone.utc).timestamp()
    claims = parts(kit, mint_jwt_svid(kit.SUB_A, key=kit.keys.ec256, kid="k", audience="a"))[1]
    assert before - 1 <= claims["iat"] <= datetime.now(timezone.utc).timestamp()
    assert claims["exp"] == claims["iat"] + 300


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"spiffe_id": "spiffe://a.example"}, "trust domain ID"),
    ({"kid": ""}, "kid"),
    ({"kid": None}, "kid"),
    ({"audience": ""}, "audience"),
    ({"audience": []}, "audience"),
    ({"audience": ["a", ""]}, "audience"),
    ({"ttl": timedelta(0)}, "ttl"),
    ({"ttl": timedelta(seconds=-5)}, "ttl"),
    ({"ttl": timedelta(milliseconds=500)}, "ttl"),
    ({"ttl": 300}, "ttl"),
    ({"now": datetime(2026, 1, 1)}, "now must be"),
    ({"algorithm": "HS256"}, "algorithm"),
    ({"algorithm": "none"}, "algorithm"),
    ({"algorithm": "ES384"}, "ES384 needs an EC secp384r1 key"),
    ({"algorithm": "RS256"}, "RS256 needs an RSA key"),
])
def test_mint_refuses_meaningless_arguments(kit, kwargs, match):
    args = {"spiffe_id": kit.SUB_A, "key": kit.keys.ec256, "kid": "k", "audience": "a", "now": kit.NOW, **kwargs}
    with pytest.raises(UsageError, match=match):
        mint_jwt_svid(args.pop("spiffe_id"), **args)


def test_mint_refuses_keys_without_a_jwt_svid_algorithm(kit):
    for key, match in ((kit.keys.ed25519, "EC or RSA private key"), (kit.keys.ec256.public_key(), "EC or RSA private key"),
                       (ec.generate_private_key(ec.SECP256K1()), "secp256k1"), (kit.keys.rsa1024, "1024-bit"),
                       (b"secret", "EC or RSA private key")):
        with pytest.raises(UsageError, match=match):
            mint_jwt_svid(kit.SUB_A, key=key, kid="k", audience="a")
    with pytest.raises(UsageError, match="ES256 needs an EC secp256r1 key"):
        mint_jwt_svid(kit.SUB_A, key=kit.keys.rsa2048, kid="k", audience="a", algorithm="ES256")


def test_mint_rejects_a_malformed_spiffe_id(kit):
    with pytest.raises(IdentityError):
        mint_jwt_svid("spiffe://A.example/x", key=kit.keys.ec256, kid="k", audience="a")


def test_rsa_key_for_pss_must_be_large_enough(kit):
    with pytest.raises(UsageError, match="1024-bit"):
        mint_jwt_svid(kit.SUB_A, key=kit.keys.rsa1024, kid="k", audience="a", algorithm="PS256")
