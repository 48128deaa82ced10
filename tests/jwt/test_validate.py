"""validate_jwt_svid: every rule of the JWT-SVID checklist, each with a positive control beside it."""

from __future__ import annotations

import base64
import json
import types
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ztid.bundle import Bundle, BundleSet
from ztid.errors import SvidError, UsageError, VerificationError
from ztid.jwtsvid import ALGORITHMS, MAX_TOKEN_LENGTH, validate_jwt_svid
from ztid.spiffeid import SpiffeId

NINE = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


def check(kit: types.SimpleNamespace, token: str, audience: object = None, **kw: object):
    return validate_jwt_svid(token, kw.pop("bundles", kit.bundles), kit.AUD if audience is None else audience,
                             at=kw.pop("at", kit.NOW), **kw)


def rejected(kit, token, error=SvidError, match=None, **kw) -> str:
    with pytest.raises(error, match=match) as info:
        check(kit, token, **kw)
    return str(info.value)


# -- positive controls ---------------------------------------------------------------------------

def test_the_standard_lists_exactly_nine_algorithms():
    assert ALGORITHMS == frozenset(NINE)


@pytest.mark.parametrize("alg", NINE)
def test_each_standard_algorithm_with_its_key_validates(kit, alg):
    kid, _ = kit.keys.for_alg(alg)
    got = check(kit, kit.make(alg))
    assert got.spiffe_id == SpiffeId.parse(kit.SUB_A)
    assert got.kid == kid and got.algorithm == alg
    assert got.audience == (kit.AUD,)
    assert got.expiry == datetime.fromtimestamp(kit.NOW_TS + 300, timezone.utc)
    assert got.expiry.tzinfo is not None


def test_result_claims_are_the_payload_and_read_only(kit):
    got = check(kit, kit.make(jti="abc", custom={"x": 1}))
    assert dict(got.claims) == kit.claims(jti="abc", custom={"x": 1})
    with pytest.raises(TypeError):
        got.claims["sub"] = "spiffe://evil.example/x"  # type: ignore[index]


def test_a_single_bundle_works_for_its_own_trust_domain(kit):
    assert check(kit, kit.make(), bundles=kit.bundle_a).spiffe_id.trust_domain.name == kit.TD_A


@pytest.mark.parametrize("typ", ["JWT", "JOSE", None])
def test_typ_jwt_jose_or_absent_is_accepted(kit, typ):
    assert check(kit, kit.make(header={"typ": typ if typ else kit.DROP}))


# -- alg, checked before anything else -----------------------------------------------------------

def test_alg_none_is_rejected_with_or_without_a_signature(kit):
    hdr = {"alg": "none", "kid": "a-ec256"}
    unsigned = kit.sign(hdr, kit.claims(), None, "none")  # ends with "." (empty signature)
    assert unsigned.endswith(".")
    rejected(kit, unsigned, match="alg 'none' is not allowed")
    signed = unsigned + kit.b64(b"\x01" * 64)
    rejected(kit, signed, match="alg 'none' is not allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_hmac_keyed_with_the_bundle_public_key_is_rejected(kit, alg, encoding):
    # The classic alg-confusion attack: an HMAC "signed" with the public key everyone knows.
    secret = kit.keys.ec256.public_key().public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = kit.sign({"alg": alg, "kid": "a-ec256", "typ": "JWT"}, kit.claims(), secret)
    rejected(kit, token, match=f"alg '{alg}' is not allowed")


def test_eddsa_is_rejected_even_when_properly_signed(kit):
    token = kit.sign({"alg": "EdDSA", "kid": "a-ec256"}, kit.claims(), kit.keys.ed25519)
    rejected(kit, token, match="alg 'EdDSA' is not allowed")


@pytest.mark.parametrize("alg", ["ES256K", "RS1", "es256", "ES256 ", "HS1", "", "PS256\x00"])
def test_unknown_algorithms_are_rejected(kit, alg):
    token = kit.sign({"alg": alg, "kid": "a-ec256"}, kit.claims(), kit.keys.ec256, "ES256")
    rejected(kit, token, match="is not allowed")


@pytest.mark.parametrize("alg", [None, 256, ["ES256"], {"ES256": 1}, True])
def test_missing_or_non_string_alg_is_rejected(kit, alg):
    hdr = {"kid": "a-ec256"} if alg is None else {"alg": alg, "kid": "a-ec256"}
    token = kit.sign(hdr, kit.claims(), kit.keys.ec256, "ES256")
    rejected(kit, token, match="alg")


def test_alg_is_checked_before_the_other_header_fields_and_the_payload(kit):
    # A header that breaks every rule and a payload that is not even JSON: the error names alg.
    hdr = {"alg": "HS256", "typ": "evil", "crit": ["b64"]}
    token = f"{kit.b64(json.dumps(hdr).encode())}.{kit.b64(b'not json')}.{kit.b64(b'x')}"
    rejected(kit, token, match="alg 'HS256' is not allowed")


# -- other header rules --------------------------------------------------------------------------

@pytest.mark.parametrize("typ", ["jwt", "at+jwt", "JWS", "", 1, ["JWT"]])
def test_typ_other_than_jwt_or_jose_is_rejected(kit, typ):
    rejected(kit, kit.make(header={"typ": typ}), match="typ")


@pytest.mark.parametrize("crit", [["exp"], [], "b64"])
def test_crit_is_rejected(kit, crit):
    rejected(kit, kit.make(header={"crit": crit, "b64": False}), match="crit")


def test_kid_missing_is_rejected(kit):
    rejected(kit, kit.make(header={"kid": kit.DROP}), match="no 'kid'")


@pytest.mark.parametrize("kid", ["", 7, ["a-ec256"], None])
def test_kid_empty_or_not_a_string_is_rejected(kit, kid):
    token = kit.sign({"alg": "ES256", "kid": kid}, kit.claims(), kit.keys.ec256)
    rejected(kit, token, match="kid")


def test_kid_unknown_is_rejected(kit):
    rejected(kit, kit.make(kid="nope"), VerificationError, match="kid 'nope' is not a JWT authority of trust domain 'a.example'")


# -- trust domain of the subject, and only it ----------------------------------------------------

def test_kid_of_another_trust_domain_is_not_used_even_when_both_are_loaded(kit):
    # Positive control: B's own key vouches for B's subject.
    assert check(kit, kit.make(kid="b-ec256", key=kit.keys.b_ec256, sub=kit.SUB_B)).spiffe_id.trust_domain.name == kit.TD_B
    # A subject in B signed by A's key, naming A's kid: A's bundle must not be consulted.
    rejected(kit, kit.make(kid="a-ec256", sub=kit.SUB_B), VerificationError,
             match="kid 'a-ec256' is not a JWT authority of trust domain 'b.example'")
    # A subject in A signed by B's key, naming B's kid.
    rejected(kit, kit.make(kid="b-ec256", key=kit.keys.b_ec256), VerificationError, match="not a JWT authority")


def test_same_kid_in_two_trust_domains_picks_the_subjects_domain(kit):
    # "shared" exists in both bundles with different keys. Signed by A's "shared" key:
    assert check(kit, kit.make(kid="shared", key=kit.keys.ec256))
    rejected(kit, kit.make(kid="shared", key=kit.keys.ec256, sub=kit.SUB_B), VerificationError, match="signature")
    assert check(kit, kit.make(kid="shared", key=kit.keys.b_shared, sub=kit.SUB_B))


def test_no_bundle_for_the_subjects_trust_domain_is_rejected(kit):
    rejected(kit, kit.make(sub="spiffe://c.example/w"), VerificationError, match="no trust bundle for trust domain 'c.example'")
    # A single Bundle of A never vouches for B, whatever kid the token names.
    rejected(kit, kit.make(sub=kit.SUB_B), VerificationError, match="no trust bundle for trust domain 'b.example'",
             bundles=kit.bundle_a)


def test_a_bundle_without_jwt_authorities_trusts_no_token(kit):
    empty = BundleSet([Bundle(kit.TD_A, (), {})])
    rejected(kit, kit.make(), VerificationError, match="not a JWT authority", bundles=empty)


def test_a_key_removed_from_the_bundle_stops_being_trusted_at_once(kit):
    token = kit.make()
    assert check(kit, token)
    rotated = kit.bundles.replace(Bundle(kit.TD_A, (), {k: v for k, v in kit.bundle_a.jwt_authorities.items()
                                                          if k != "a-ec256"}))
    rejected(kit, token, VerificationError, match="not a JWT authority", bundles=rotated)


# -- key type must fit the algorithm -------------------------------------------------------------

@pytest.mark.parametrize(("alg", "kid", "key_attr", "match"), [
    ("RS256", "a-ec256", "ec256", "RS256 needs an RSA key of at least 2048 bits"),
    ("PS256", "a-ec256", "ec256", "PS256 needs an RSA key"),
    ("ES256", "a-rsa2048", "rsa2048", "is a 2048-bit RSA key; ES256 needs an EC secp256r1 key"),
    ("ES384", "a-ec256", "ec256", "is an EC secp256r1 key; ES384 needs an EC secp384r1 key"),
    ("ES256", "a-ec384", "ec384", "ES256 needs an EC secp256r1 key"),
    ("ES512", "a-ec384", "ec384", "ES512 needs an EC secp521r1 key"),
    ("RS256", "a-rsa1024", "rsa1024", "1024-bit RSA key"),
    ("PS256", "a-rsa1024", "rsa1024", "1024-bit RSA key"),
])
def test_key_and_algorithm_family_must_match(kit, alg, kid, key_attr, match):
    key = getattr(kit.keys, key_attr)
    hdr = {"alg": alg, "kid": kid}
    # Sign with whatever the key can produce, so only the family rule can reject it.
    sign_alg = {"ec256": "ES256", "ec384": "ES384"}.get(key_attr, "RS256")
    token = kit.sign(hdr, kit.claims(), key, sign_alg)
    rejected(kit, token, VerificationError, match=match)


# -- signature -----------------------------------------------------------------------------------

def test_tampered_payload_is_rejected(kit):
    h, _, s = kit.make().split(".")
    forged = kit.b64(json.dumps(kit.claims(sub="spiffe://a.example/ns/prod/sa/admin")).encode())
    rejected(kit, f"{h}.{forged}.{s}", VerificationError, match="signature does not verify")


def test_tampered_header_is_rejected(kit):
    _, p, s = kit.make().split(".")
    h = kit.b64(json.dumps({"alg": "ES256", "kid": "a-ec256", "typ": "JOSE"}).encode())
    rejected(kit, f"{h}.{p}.{s}", VerificationError, match="signature does not verify")


@pytest.mark.parametrize("alg", NINE)
@pytest.mark.parametrize("bit", [0, 7, -1])
def test_one_flipped_signature_bit_is_rejected(kit, alg, bit):
    h, p, s = kit.make(alg).split(".")
    sig = bytearray(kit.unb64(s))
    index = bit if bit >= 0 else len(sig) * 8 - 1
    sig[index // 8] ^= 1 << (7 - index % 8)
    rejected(kit, f"{h}.{p}.{kit.b64(bytes(sig))}", VerificationError, match="signature does not verify")


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "RS256", "PS256"])
@pytest.mark.parametrize("change", ["drop-last", "add-zero", "prepend-zero"])
def test_signature_of_the_wrong_length_is_rejected(kit, alg, change):
    h, p, s = kit.make(alg).split(".")
    sig = kit.unb64(s)
    sig = {"drop-last": sig[:-1], "add-zero": sig + b"\x00", "prepend-zero": b"\x00" + sig}[change]
    rejected(kit, f"{h}.{p}.{kit.b64(sig)}", VerificationError, match="signature is .* bytes; expected")


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_der_encoded_ecdsa_signature_is_rejected(kit, alg):
    # JWS carries ECDSA as raw r || s (RFC 7518 §3.4); the DER form cryptography produces is not a JWS signature.
    h, p, s = kit.make(alg).split(".")
    sig = kit.unb64(s)
    n = len(sig) // 2
    der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
    rejected(kit, f"{h}.{p}.{kit.b64(der)}", VerificationError, match="signature is .* bytes; expected")


def test_ecdsa_signature_with_zero_r_or_s_is_rejected(kit):
    h, p, _ = kit.make().split(".")
    for sig in (b"\x00" * 64, b"\x00" * 32 + b"\x01" * 32, b"\xff" * 64):
        rejected(kit, f"{h}.{p}.{kit.b64(sig)}", VerificationError, match="signature does not verify")


def test_empty_signature_is_rejected(kit):
    h, p, _ = kit.make().split(".")
    rejected(kit, f"{h}.{p}.", match="signature part is empty")


# -- sub -----------------------------------------------------------------------------------------

def test_missing_sub_is_rejected(kit):
    rejected(kit, kit.make(sub=kit.DROP), match="no 'sub'")


@pytest.mark.parametrize(("sub", "match"), [
    ("", "sub is not a SPIFFE ID"),
    ("spiffeid://a.example/w", "sub is not a SPIFFE ID"),
    ("https://a.example/w", "sub is not a SPIFFE ID"),
    ("SPIFFE://a.example/w", "sub is not a SPIFFE ID"),
    ("spiffe://A.example/w", "sub is not a SPIFFE ID"),
    ("spiffe://a.example/w/", "sub is not a SPIFFE ID"),
    ("spiffe://a.example/../w", "sub is not a SPIFFE ID"),
    ("a.example/w", "sub is not a SPIFFE ID"),
    (42, "sub is not a SPIFFE ID"),
    (["spiffe://a.example/w"], "sub is not a SPIFFE ID"),
    ("spiffe://a.example", "trust domain ID"),
])
def test_sub_must_be_a_spiffe_id_with_a_path(kit, sub, match):
    rejected(kit, kit.make(sub=sub), match=match)


# -- aud -----------------------------------------------------------------------------------------

def test_missing_aud_is_rejected(kit):
    rejected(kit, kit.make(aud=kit.DROP), match="no 'aud'")


@pytest.mark.parametrize("aud", [[], "", [""], ["spiffe://a.example/registry", ""], ["spiffe://a.example/registry", 1],
                                 [["spiffe://a.example/registry"]], None, 7, {"spiffe://a.example/registry": 1}])
def test_empty_or_malformed_aud_is_rejected(kit, aud):
    rejected(kit, kit.make(aud=aud), match="aud")


def test_aud_not_containing_ours_is_rejected(kit):
    rejected(kit, kit.make(aud="spiffe://a.example/inference"), VerificationError, match="does not contain")
    rejected(kit, kit.make(aud=["x", "y"]), VerificationError, match="does not contain")
    # Close but not equal values never match: no prefix, case or whitespace games.
    for near in (kit.AUD + "/", kit.AUD.upper(), " " + kit.AUD, kit.AUD[:-1]):
        rejected(kit, kit.make(aud=near), VerificationError, match="does not contain")


def test_aud_as_string_or_list_containing_ours_is_accepted(kit):
    assert check(kit, kit.make(aud=kit.AUD)).audience == (kit.AUD,)
    assert check(kit, kit.make(aud=["other", kit.AUD])).audience == ("other", kit.AUD)
    assert check(kit, kit.make(aud="other"), audience=["x", "other"]).audience == ("other",)
    assert check(kit, kit.make(aud="other"), audience=("other",))
    assert check(kit, kit.make(aud="other"), audience=iter(["other"]))


@pytest.mark.parametrize("audience", ["", [], (), [""], ["ok", ""], set(), [None], b"aud", None, 5])
def test_empty_or_malformed_expected_audience_is_a_usage_error(kit, audience):
    token = kit.make()
    with pytest.raises(UsageError, match="audience"):
        validate_jwt_svid(token, kit.bundles, audience, at=kit.NOW)


def test_usage_errors_come_before_token_errors(kit):
    with pytest.raises(UsageError):
        validate_jwt_svid("garbage", kit.bundles, "", at=kit.NOW)


# -- time ----------------------------------------------------------------------------------------

def test_missing_exp_is_rejected(kit):
    rejected(kit, kit.make(exp=kit.DROP), match="no 'exp'")


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1780000000", True, None, [1], {"t": 1}, -1, 10**20, 2**63])
def test_time_claims_must_be_numeric_dates(kit, name, value):
    rejected(kit, kit.make(**{name: value}), match=name)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"1" * 5000])
def test_non_finite_or_huge_exp_is_rejected(kit, literal):
    body = json.dumps(kit.claims(exp=0)).encode().replace(b'"exp":0', b'"exp":' + literal)
    rejected(kit, kit.make(payload=body))


def test_fractional_numeric_dates_are_accepted(kit):
    got = check(kit, kit.make(exp=kit.NOW_TS + 10.5, iat=kit.NOW_TS - 0.25))
    assert got.expiry.timestamp() == kit.NOW_TS + 10.5


def test_expired_token_is_rejected(kit):
    rejected(kit, kit.make(exp=kit.NOW_TS - 300, iat=kit.NOW_TS - 600), VerificationError, match="expired")


def test_expiry_boundary_with_and_without_leeway(kit):
    token = kit.make(exp=kit.NOW_TS - 10)
    assert check(kit, token)  # default leeway 30 s
    rejected(kit, token, VerificationError, match="expired", leeway=timedelta(0))
    rejected(kit, token, VerificationError, match="expired", leeway=timedelta(seconds=10))
    assert check(kit, token, leeway=timedelta(seconds=11))
    exact = kit.make(exp=kit.NOW_TS)
    rejected(kit, exact, VerificationError, match="expired", leeway=timedelta(0))  # RFC 7519: now must be before exp
    assert check(kit, kit.make(exp=kit.NOW_TS + 1), leeway=timedelta(0))


def test_at_moves_the_clock(kit):
    token = kit.make()
    assert check(kit, token, at=kit.NOW + timedelta(seconds=299), leeway=timedelta(0))
    rejected(kit, token, VerificationError, match="expired", at=kit.NOW + timedelta(seconds=300), leeway=timedelta(0))
    other_zone = (kit.NOW + timedelta(seconds=299)).astimezone(timezone(timedelta(hours=-7)))
    assert check(kit, token, at=other_zone, leeway=timedelta(0))


def test_nbf_in_the_future_is_rejected(kit):
    rejected(kit, kit.make(nbf=kit.NOW_TS + 300), VerificationError, match="not valid before")
    assert check(kit, kit.make(nbf=kit.NOW_TS + 20))  # within the default leeway
    rejected(kit, kit.make(nbf=kit.NOW_TS + 20), VerificationError, match="not valid before", leeway=timedelta(0))
    assert check(kit, kit.make(nbf=kit.NOW_TS), leeway=timedelta(0))


def test_iat_in_the_future_or_after_exp_is_rejected(kit):
    rejected(kit, kit.make(iat=kit.NOW_TS + 120), VerificationError, match="issued in the future")
    rejected(kit, kit.make(iat=kit.NOW_TS + 400), SvidError, match="iat .* is after exp")
    assert check(kit, kit.make(iat=kit.DROP))


@pytest.mark.parametrize("leeway", [timedelta(seconds=-1), timedelta(minutes=6), 30, 0.5, None])
def test_leeway_must_be_a_small_non_negative_timedelta(kit, leeway):
    with pytest.raises(UsageError, match="leeway"):
        check(kit, kit.make(), leeway=leeway)


@pytest.mark.parametrize("at", [datetime(2026, 6, 1, 12, 0), 1780000000, "2026-06-01T12:00:00Z"])
def test_at_must_be_an_aware_datetime(kit, at):
    with pytest.raises(UsageError, match="at must be"):
        check(kit, kit.make(), at=at)


# -- serialization -------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_anything_but_three_parts_is_rejected(kit, count):
    parts = kit.make().split(".")
    token = ".".join((parts * 2)[:count])
    msg = rejected(kit, token, match=f"token has {count} parts")
    assert ("JWE" in msg) == (count == 5)


def test_jwe_compact_token_is_rejected(kit):
    hdr = kit.b64(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "a-rsa2048"}).encode())
    token = ".".join([hdr, kit.b64(b"k" * 256), kit.b64(b"i" * 12), kit.b64(b"c" * 40), kit.b64(b"t" * 16)])
    rejected(kit, token, match="JWE")


def test_jws_json_serialization_is_rejected(kit):
    h, p, s = kit.make().split(".")
    general = json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]})
    flattened = json.dumps({"payload": p, "protected": h, "signature": s})
    for token in (general, flattened):
        rejected(kit, token)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_padding_characters_are_rejected(kit, where):
    parts = kit.make().split(".")
    parts[where] += "=" * (-len(parts[where]) % 4 or 4)
    rejected(kit, ".".join(parts), match="'=' is not allowed")


@pytest.mark.parametrize("mangle", [
    lambda t: " " + t, lambda t: t + "\n", lambda t: t + " ", lambda t: t.replace(".", ". ", 1),
    lambda t: t[:20] + "\t" + t[20:], lambda t: t[:20] + "\u00a0" + t[20:], lambda t: "Bearer " + t,
    lambda t: t[:10] + "+" + t[11:], lambda t: t[:10] + "/" + t[11:], lambda t: t[:10] + "\u0660" + t[11:],
])
def test_whitespace_and_foreign_characters_are_rejected(kit, mangle):
    rejected(kit, mangle(kit.make()))


def test_bearer_prefix_gets_a_hint(kit):
    rejected(kit, "Bearer " + kit.make(), match="without the authorization scheme")


def test_non_canonical_base64url_is_rejected(kit):
    h, p, s = kit.make().split(".")
    # 64 signature bytes use 86 characters whose last one carries 4 unused bits; setting one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(s[-1]) | 1]
    assert twin != s[-1] and base64.urlsafe_b64decode(s[:-1] + twin + "==") == base64.urlsafe_b64decode(s + "==")
    assert check(kit, f"{h}.{p}.{s}")
    rejected(kit, f"{h}.{p}.{s[:-1]}{twin}", match="not canonical")


@pytest.mark.parametrize("part", [0, 1])
def test_impossible_base64url_length_is_rejected(kit, part):
    parts = kit.make().split(".")
    parts[part] = parts[part][: (len(parts[part]) // 4) * 4] + "A"  # 4k+1 characters encode no byte string
    rejected(kit, ".".join(parts), match="base64url")


@pytest.mark.parametrize("raw", [
    b'{"alg":"ES256","kid":"a-ec256","alg":"none"}',
    b'{"alg":"none","kid":"a-ec256","alg":"ES256"}',
    b'{"alg":"ES256","kid":"a-ec256","kid":"shared"}',
])
def test_duplicate_keys_in_the_header_are_rejected(kit, raw):
    rejected(kit, kit.sign(raw, kit.claims(), kit.keys.ec256, "ES256"), match="duplicate JSON member")


def test_duplicate_keys_in_the_payload_are_rejected(kit):
    body = json.dumps(kit.claims()).encode()
    for extra in (b',"sub":"spiffe://a.example/admin"}', b',"aud":"x"}', b',"exp":99999999999}'):
        rejected(kit, kit.make(payload=body[:-1] + extra), match="duplicate JSON member")
    nested = body[:-1] + b',"ctx":{"a":1,"a":2}}'
    rejected(kit, kit.make(payload=nested), match="duplicate JSON member")


@pytest.mark.parametrize("raw", [b"[]", b'"ES256"', b"null", b"1", b"true", b'[{"alg":"ES256"}]'])
def test_header_and_payload_must_be_json_objects(kit, raw):
    rejected(kit, kit.sign(raw, kit.claims(), kit.keys.ec256, "ES256"), match="header must be a JSON object")
    rejected(kit, kit.make(payload=raw), match="payload must be a JSON object")


@pytest.mark.parametrize("raw", [b"", b"{", b'{"sub":"x",}', b"\xff\xfe{}", b'\xef\xbb\xbf{"sub":"x"}',
                                 b"{'sub':'x'}", b'{"sub":"x"} {}', b'{"sub":"\xc3"}'])
def test_malformed_json_is_rejected(kit, raw):
    rejected(kit, kit.make(payload=raw), match="payload")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_are_rejected_in_any_claim(kit, literal):
    body = json.dumps(kit.claims()).encode()[:-1] + b',"score":' + literal + b"}"
    rejected(kit, kit.make(payload=body), match="not valid JSON")


def test_deep_nesting_within_the_size_cap_is_a_clean_error(kit):
    body = json.dumps(kit.claims()).encode()[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    rejected(kit, kit.make(payload=body), match="payload")
    rejected(kit, kit.sign(b'{"alg":"ES256","x":' + b"[" * 5000 + b"]" * 5000 + b"}", kit.claims(),
                           kit.keys.ec256, "ES256"), match="header")


def test_oversized_token_is_rejected_before_parsing(kit):
    big = kit.make(pad="x" * ((MAX_TOKEN_LENGTH - 600) * 3 // 4))
    assert len(big) <= MAX_TOKEN_LENGTH and check(kit, big)  # positive control just under the cap
    msg = rejected(kit, kit.make(pad="x" * MAX_TOKEN_LENGTH), match="more than the limit")
    assert "token is" in msg


@pytest.mark.parametrize("token", [b"abc.def.ghi", None, 42, ["a", "b", "c"]])
def test_token_must_be_a_str(kit, token):
    with pytest.raises(UsageError, match="token must be a str"):
        check(kit, token)


@pytest.mark.parametrize("wrong", [None, {}, [], "bundle.pem"])
def test_bundles_must_be_a_bundle_or_bundle_set(kit, wrong):
    for token in (kit.make(), "garbage"):  # a usage error whatever the token
        with pytest.raises(UsageError, match="bundles must be"):
            check(kit, token, bundles=wrong)


def test_errors_never_echo_the_token_or_its_signature(kit):
    token = kit.make(aud="spiffe://a.example/other")  # genuine signature, wrong audience
    h, p, s = token.split(".")
    msg = rejected(kit, token, VerificationError)
    assert s not in msg and p not in msg and token not in msg
    msg = rejected(kit, f"{h}.{p}.{s[:-2]}", VerificationError)
    assert s[:40] not in msg


@pytest.mark.parametrize(("header", "payload"), [
    ({"alg": "x" * 9000}, None),
    ({"alg": "ES256", "kid": "k" * 9000}, None),
    ({"alg": "ES256", "kid": "a-ec256", "typ": [[[[[[[["JWT"]]]]]]]]}, None),
    (b'{"alg":' + b"[" * 900 + b"]" * 900 + b"}", None),
    ({"alg": "ES256", "kid": "a-ec256"}, {"sub": "spiffe://a.example/w", "aud": ["y" * 9000], "exp": 1}),
])
def test_messages_stay_short_whatever_the_token_holds(kit, header, payload):
    token = kit.sign(header, payload or kit.claims(), kit.keys.ec256, "ES256")
    assert len(rejected(kit, token)) < 400


@pytest.mark.parametrize("alg", ["PS256", "PS384", "PS512"])
def test_pss_salt_must_be_the_hash_length(kit, alg):
    # RFC 7518 §3.5: the salt is as long as the hash. A PSS signature with another salt length is not a JWS signature.
    h_alg = {"PS256": hashes.SHA256, "PS384": hashes.SHA384, "PS512": hashes.SHA512}[alg]()
    header = kit.b64(json.dumps({"alg": alg, "kid": "a-rsa2048"}).encode())
    body = kit.b64(json.dumps(kit.claims()).encode())
    for salt, ok in ((h_alg.digest_size, True), (0, False), (padding.PSS.MAX_LENGTH, False)):
        sig = kit.keys.rsa2048.sign(f"{header}.{body}".encode(), padding.PSS(mgf=padding.MGF1(h_alg), salt_length=salt), h_alg)
        token = f"{header}.{body}.{kit.b64(sig)}"
        if ok:
            assert check(kit, token).algorithm == alg
        else:
            rejected(kit, token, VerificationError, match="signature does not verify")
