"""Hypothesis properties: mint -> validate round-trips; arbitrary and mutated input only ever raises
SvidError; and on signed tokens with random headers and claims, validate accepts exactly what an
independent model of the JWT-SVID rules accepts."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ztid.bundle import Bundle, BundleSet
from ztid.errors import IdentityError, SvidError, VerificationError
from ztid.jwtsvid import mint_jwt_svid, validate_jwt_svid
from ztid.spiffeid import SpiffeId

NINE = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

trust_domains = st.from_regex(r"[a-z0-9._-]{1,40}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True).filter(lambda s: s not in (".", ".."))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def signers(kit) -> list[tuple[str, str, object, str]]:
    """(alg, kid, private key, trust domain) for every key the test bundles hold, plus RSA-1024."""
    k = kit.keys
    out = [("ES256", "a-ec256", k.ec256, kit.TD_A), ("ES384", "a-ec384", k.ec384, kit.TD_A),
           ("ES512", "a-ec521", k.ec521, kit.TD_A), ("ES256", "b-ec256", k.b_ec256, kit.TD_B),
           ("RS256", "a-rsa1024", k.rsa1024, kit.TD_A)]
    out += [(alg, "a-rsa2048", k.rsa2048, kit.TD_A) for alg in NINE if alg[0] in "RP"]
    return out


# -- round trip ----------------------------------------------------------------------------------

@FAST
@given(data=st.data(), td=trust_domains, path=st.lists(segments, min_size=1, max_size=4),
       audience=st.lists(st.text(min_size=1, max_size=24), min_size=1, max_size=4),
       kid=st.text(min_size=1, max_size=24), ttl=st.timedeltas(timedelta(seconds=1), timedelta(days=2)),
       now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))))
def test_mint_then_validate_round_trips(kit, data, td, path, audience, kid, ttl, now):
    alg, _, key, _ = data.draw(st.sampled_from([s for s in signers(kit) if s[1] != "a-rsa1024"]), label="signer")
    spiffe_id = SpiffeId.from_segments(td, *path)
    token = mint_jwt_svid(spiffe_id, key=key, kid=kid, audience=audience, ttl=ttl, now=now, algorithm=alg)
    bundles = BundleSet([Bundle(td, (), {kid: key.public_key()})])
    ours = data.draw(st.sampled_from(audience), label="ours")

    got = validate_jwt_svid(token, bundles, [ours, "\x00unrelated"], at=now, leeway=timedelta(0))
    assert got.spiffe_id == spiffe_id and got.kid == kid and got.algorithm == alg
    assert got.audience == tuple(dict.fromkeys(audience))
    assert got.expiry.timestamp() == math.floor(now.timestamp()) + math.floor(ttl.total_seconds())

    with pytest.raises(VerificationError, match="expired"):
        validate_jwt_svid(token, bundles, ours, at=now + ttl, leeway=timedelta(0))
    assume("\x00unrelated" not in audience)
    with pytest.raises(VerificationError, match="aud"):
        validate_jwt_svid(token, bundles, "\x00unrelated", at=now)


# -- fuzz: nothing untyped escapes ---------------------------------------------------------------

def _outcome(kit, token):
    try:
        return validate_jwt_svid(token, kit.bundles, kit.AUD, at=kit.NOW)
    except SvidError as exc:  # anything else (incl. UsageError) fails the test
        # Messages go to logs: whatever the input, they are one printable line (no log injection).
        assert str(exc).isprintable(), repr(str(exc))
        return exc


@FAST
@given(token=st.text(max_size=300) | st.text(alphabet=B64_CHARS + ".=", max_size=300))
def test_arbitrary_strings_only_raise_svid_error(kit, token):
    assert isinstance(_outcome(kit, token), SvidError)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), alg=st.sampled_from(NINE))
def test_mutated_valid_tokens_are_rejected_cleanly(kit, data, alg):
    token = kit.make(alg)
    op = data.draw(st.sampled_from(["replace", "insert", "delete", "swap", "truncate", "splice", "dot"]), label="op")
    i = data.draw(st.integers(0, len(token) - 1), label="index")
    char = data.draw(st.sampled_from(B64_CHARS + ".= \n\x00é") | st.characters(), label="char")
    parts = token.split(".")
    if op == "replace":
        mutated = token[:i] + char + token[i + 1:]
    elif op == "insert":
        mutated = token[:i] + char + token[i:]
    elif op == "delete":
        mutated = token[:i] + token[i + 1:]
    elif op == "swap":
        a, b = data.draw(st.permutations([0, 1, 2]), label="order")[:2]
        parts[a], parts[b] = parts[b], parts[a]
        mutated = ".".join(parts)
    elif op == "truncate":
        mutated = token[:i]
    elif op == "splice":  # a part of another valid token, over other claims
        other = kit.make(data.draw(st.sampled_from(NINE), label="other"), jti="other").split(".")
        j = data.draw(st.integers(0, 2), label="part")
        parts[j] = other[j]
        mutated = ".".join(parts)
    else:
        mutated = token[:i] + "." + token[i:]
    result = _outcome(kit, mutated)
    if mutated == token:
        assert not isinstance(result, Exception)
    else:
        assert isinstance(result, SvidError), f"accepted a mutated token ({op})"


# -- model check: signed tokens with random headers and claims -----------------------------------

MISSING = object()


def _numeric(value) -> bool:
    return type(value) in (int, float) and 0 <= value <= 253402300799


def model_accepts(kit, header, claims, signer) -> bool:
    """The JWT-SVID rules, written again from the standard, independently of ztid.jwtsvid."""
    s_alg, s_kid, s_key, _ = signer
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in NINE or "crit" in header or header.get("typ", "JWT") not in ("JWT", "JOSE"):
        return False
    if not isinstance(kid, str) or not kid:
        return False
    sub = claims.get("sub")
    try:
        spiffe_id = SpiffeId.parse(sub) if isinstance(sub, str) else None
    except IdentityError:
        spiffe_id = None
    if spiffe_id is None or not spiffe_id.path:
        return False
    keys = {kit.TD_A: {"a-ec256": kit.keys.ec256, "a-ec384": kit.keys.ec384, "a-ec521": kit.keys.ec521,
                       "a-rsa2048": kit.keys.rsa2048, "a-rsa1024": kit.keys.rsa1024, "shared": kit.keys.ec256},
            kit.TD_B: {"b-ec256": kit.keys.b_ec256, "shared": kit.keys.b_shared}}.get(spiffe_id.trust_domain.name, {})
    if keys.get(kid) is not s_key or alg != s_alg or s_kid == "a-rsa1024":
        return False  # signature cannot verify with the subject domain's key for kid, or the key is too weak
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if not aud_list or not all(isinstance(a, str) and a for a in aud_list) or kit.AUD not in aud_list:
        return False
    exp, nbf, iat = (claims.get(n, MISSING) for n in ("exp", "nbf", "iat"))
    if not _numeric(exp) or any(v is not MISSING and not _numeric(v) for v in (nbf, iat)):
        return False
    now, leeway = kit.NOW_TS, 30
    if now >= exp + leeway or (nbf is not MISSING and now + leeway < nbf):
        return False
    if nbf is not MISSING and nbf > exp:
        return False
    return iat is MISSING or (now + leeway >= iat and iat <= exp)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validation_accepts_exactly_what_the_rules_allow(kit, data):
    # A coherent token for a random signer, then 0-3 fields replaced by a boundary value or random JSON,
    # so that every rule is probed one or two at a time as well as in bulk.
    draw = data.draw
    signer = draw(st.sampled_from(signers(kit)), label="signer")
    s_alg, s_kid, s_key, s_td = signer
    t = kit.NOW_TS
    times = st.integers(t - 400, t + 400) | st.floats(t - 400, t + 400)
    header = {"alg": s_alg, "kid": s_kid, "typ": "JWT"}
    claims = {"sub": f"spiffe://{s_td}/w", "aud": kit.AUD, "exp": draw(st.integers(t + 1, t + 400), label="exp"),
              "nbf": MISSING, "iat": MISSING}
    alternatives = {
        "alg": [*NINE, "none", "HS256", "EdDSA", "es256"],
        "kid": ["a-ec256", "b-ec256", "shared", "nope", ""],
        "typ": ["JOSE", "jwt", ""],
        "crit": [[], ["exp"]],
        "sub": [kit.SUB_A, kit.SUB_B, f"spiffe://{kit.TD_A}", "spiffe://c.example/w", "spiffe://a.example/w/"],
        "aud": [[kit.AUD, "x"], "x", [], [""], [kit.AUD, ""], [kit.AUD, 1]],
        "exp": [times, t - 100, t + 10**12, "1", True],
        "nbf": [times, True],
        "iat": [times, "now"],
    }
    for name in draw(st.lists(st.sampled_from(sorted(alternatives)), max_size=3, unique=True), label="perturb"):
        choices = [st.just(MISSING)] + [a if isinstance(a, st.SearchStrategy) else st.just(a) for a in alternatives[name]]
        value = draw(st.one_of(*choices) | json_values, label=name)
        (header if name in ("alg", "kid", "typ", "crit") else claims)[name] = value
    claims.update(draw(st.dictionaries(st.sampled_from(["jti", "iss", "x"]), json_values, max_size=2), label="extra"))
    header = {k: v for k, v in header.items() if v is not MISSING}
    claims = {k: v for k, v in claims.items() if v is not MISSING}

    result = _outcome(kit, kit.sign(header, claims, s_key, s_alg))
    expected = model_accepts(kit, header, claims, signer)
    event(f"accepted={expected}")
    assert (not isinstance(result, Exception)) == expected, f"model says {expected}, ztid says {result!r}"
    if expected:
        assert result.claims == claims and result.kid == header["kid"]
