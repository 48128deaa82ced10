"""Interoperability: tokens ztid mints validate in py-spiffe, and tokens PyJWT mints validate in ztid.

PyJWT comes with py-spiffe (a ztid dependency); both are independent JOSE implementations, so an
encoding mistake shared by ztid's signer and verifier (or by ztid and this suite's own signer)
would show here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt as pyjwt
import pytest
import spiffe

from ztid.bundle import Bundle, BundleSet
from ztid.errors import VerificationError
from ztid.jwtsvid import mint_jwt_svid, validate_jwt_svid
from ztid.spiffeid import SpiffeId

NINE = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


@pytest.mark.parametrize("alg", NINE)
def test_py_spiffe_validates_what_ztid_mints(kit, alg):
    kid, key = kit.keys.for_alg(alg)
    token = mint_jwt_svid(kit.SUB_A, key=key, kid=kid, audience=kit.AUD, algorithm=alg)  # now: py-spiffe uses the clock
    bundle = spiffe.JwtBundle(spiffe.TrustDomain(kit.TD_A), {kid: key.public_key()})
    svid = spiffe.JwtSvid.parse_and_validate(token, bundle, {kit.AUD})
    assert str(svid.spiffe_id) == kit.SUB_A


@pytest.mark.parametrize("alg", NINE)
def test_ztid_validates_what_pyjwt_mints(kit, alg):
    kid, key = kit.keys.for_alg(alg)
    now = datetime.now(timezone.utc)
    claims = {"sub": kit.SUB_A, "aud": [kit.AUD], "exp": now + timedelta(minutes=5), "iat": now, "jti": "j-1"}
    token = pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
    got = validate_jwt_svid(token, kit.bundles, kit.AUD, at=now)
    assert got.spiffe_id == SpiffeId.parse(kit.SUB_A) and got.algorithm == alg and got.claims["jti"] == "j-1"
    # Positive control above; the same PyJWT token is refused once its key leaves the bundle.
    others = {k: v for k, v in kit.bundle_a.jwt_authorities.items() if k != kid}
    with pytest.raises(VerificationError, match="not a JWT authority"):
        validate_jwt_svid(token, BundleSet([Bundle(kit.TD_A, (), others)]), kit.AUD, at=now)
