"""Trust bundles: PEM and SPIFFE bundle (JWKS) parsing tables, round trips, BundleSet, and a fuzzed parser."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.bundle import Bundle, BundleSet
from ztid.errors import BundleError, VerificationError
from ztid.spiffeid import TrustDomain
from ztid.testing import TestCA


def _der_b64(cert) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _jwks(ca: TestCA) -> dict:
    return json.loads(ca.bundle().to_jwks())


def _doc(keys: list, **top: object) -> bytes:
    return json.dumps({"keys": keys, **top}).encode()


# -- PEM


def test_pem_trust_domain_from_san(ca_a: TestCA) -> None:
    b = Bundle.from_pem(ca_a.bundle().to_pem())
    assert b.trust_domain == TrustDomain("a.test")
    assert b.x509_authorities == (ca_a.root,)
    assert dict(b.jwt_authorities) == {}


def test_pem_with_intermediate_and_root_of_one_domain(ca_a_inter: TestCA) -> None:
    pem = ca_a_inter.root.public_bytes(serialization.Encoding.PEM) + ca_a_inter.intermediate.public_bytes(serialization.Encoding.PEM)
    assert len(Bundle.from_pem(pem).x509_authorities) == 2


def test_pem_two_trust_domains_rejected(ca_a: TestCA, ca_b: TestCA) -> None:
    with pytest.raises(BundleError, match="different trust domains"):
        Bundle.from_pem(ca_a.bundle().to_pem() + ca_b.bundle().to_pem())


def test_pem_trust_domain_argument(ca_a: TestCA) -> None:
    assert Bundle.from_pem(ca_a.bundle().to_pem(), trust_domain="a.test").trust_domain.name == "a.test"
    with pytest.raises(BundleError, match="not 'b.test'"):
        Bundle.from_pem(ca_a.bundle().to_pem(), trust_domain="b.test")
    with pytest.raises(BundleError, match="invalid trust domain"):
        Bundle.from_pem(ca_a.bundle().to_pem(), trust_domain="Not Valid")


def test_pem_without_spiffe_san_needs_trust_domain(ca_a: TestCA) -> None:
    inter = ca_a.with_bad_intermediate(uri="https://x.example/ca").chain[1]
    pem = inter.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(BundleError, match="pass trust_domain"):
        Bundle.from_pem(pem)
    assert Bundle.from_pem(pem, trust_domain="x.test").trust_domain.name == "x.test"


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"-----BEGIN PUBLIC KEY-----\n", "str"],
)
def test_pem_malformed(data: bytes) -> None:
    with pytest.raises(BundleError):
        Bundle.from_pem(data)  # type: ignore[arg-type]


def test_pem_leaf_certificate_rejected(ca_a: TestCA) -> None:
    with pytest.raises(BundleError, match="not a CA"):
        Bundle.from_pem(ca_a.issue("spiffe://a.test/w").chain_pem())


# -- SPIFFE bundle (JWKS)


def test_jwks_round_trip(ca_a: TestCA) -> None:
    b = Bundle(ca_a.trust_domain, [ca_a.root], {ca_a.jwt_kid: ca_a.jwt_key.public_key()}, sequence=7, refresh_hint=300)
    again = Bundle.from_jwks(b.to_jwks())
    assert again == b and hash(again) == hash(b)
    assert again.sequence == 7 and again.refresh_hint == 300 and again.skipped == ()
    assert Bundle.from_pem(b.to_pem()) == Bundle(b.trust_domain, b.x509_authorities)  # PEM carries no JWT keys


def test_jwks_rsa_and_p384_jwt_keys_round_trip(ca_a: TestCA) -> None:
    keys = {"r": rsa.generate_private_key(65537, 2048).public_key(), "e": ec.generate_private_key(ec.SECP384R1()).public_key()}
    b = Bundle("a.test", [ca_a.root], keys)
    assert Bundle.from_jwks(b.to_jwks()) == b


def test_jwks_mixed_and_unknown_fields(ca_a: TestCA) -> None:
    doc = _jwks(ca_a)
    doc["unknown_top_level"] = {"x": 1}
    doc["keys"].append({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "jwt-svid", "kid": "ed"})  # unknown kty
    doc["keys"].append({"kty": "EC", "use": "wit-svid", "kid": "wit"})  # unknown use
    doc["keys"].append({"kty": "EC", "kid": "nouse"})  # missing use
    doc["keys"].append("not an object")
    b = Bundle.from_jwks(json.dumps(doc).encode())
    assert b.x509_authorities == (ca_a.root,) and set(b.jwt_authorities) == {ca_a.jwt_kid}
    assert len(b.skipped) == 4 and all(line.startswith("keys[") for line in b.skipped)


def test_jwks_empty_keys_is_valid_and_trusts_nothing() -> None:
    b = Bundle.from_jwks(b'{"keys": []}', trust_domain="a.test")
    assert b.x509_authorities == () and dict(b.jwt_authorities) == {}
    with pytest.raises(VerificationError, match="no X.509 authorities"):
        b.x509_store()


def test_jwks_trust_domain_needed_when_no_x509(ca_a: TestCA) -> None:
    with pytest.raises(BundleError, match="pass trust_domain"):
        Bundle.from_jwks(b'{"keys": []}')
    assert Bundle.from_jwks(ca_a.bundle().to_jwks()).trust_domain.name == "a.test"  # read from the x5c CA
    with pytest.raises(BundleError):
        Bundle.from_jwks(ca_a.bundle().to_jwks(), trust_domain="b.test")


def test_jwks_sequence_beyond_2_53(ca_a: TestCA) -> None:
    big = 2**60 + 1
    b = Bundle.from_jwks(_doc([], spiffe_sequence=big), trust_domain="a.test")
    assert b.sequence == big
    assert Bundle.from_jwks(b.to_jwks(), trust_domain="a.test").sequence == big


def _x509_jwk(ca: TestCA) -> dict:
    return _jwks(ca)["keys"][0]


def _jwt_jwk(ca: TestCA) -> dict:
    return _jwks(ca)["keys"][1]


MALFORMED_ELEMENTS = [
    ("x5c missing", lambda ca: {k: v for k, v in _x509_jwk(ca).items() if k != "x5c"}),
    ("x5c empty", lambda ca: {**_x509_jwk(ca), "x5c": []}),
    ("x5c two certs", lambda ca: {**_x509_jwk(ca), "x5c": [_der_b64(ca.root), _der_b64(ca.root)]}),
    ("x5c not base64", lambda ca: {**_x509_jwk(ca), "x5c": ["!!!"]}),
    ("x5c not a certificate", lambda ca: {**_x509_jwk(ca), "x5c": [base64.b64encode(b"nope").decode()]}),
    ("x5c leaf certificate", lambda ca: {**_x509_jwk(ca), "x5c": [_der_b64(ca.issue("spiffe://a.test/w").leaf)]}),
    ("x5c key mismatch", lambda ca: {**_x509_jwk(ca), "x": _jwt_jwk(ca)["x"]}),
    ("jwt kid missing", lambda ca: {k: v for k, v in _jwt_jwk(ca).items() if k != "kid"}),
    ("jwt kid empty", lambda ca: {**_jwt_jwk(ca), "kid": ""}),
    ("jwt bad point", lambda ca: {**_jwt_jwk(ca), "y": _jwt_jwk(ca)["x"]}),
    ("jwt bad crv", lambda ca: {**_jwt_jwk(ca), "crv": "P-192"}),
    ("jwt short x", lambda ca: {**_jwt_jwk(ca), "x": "AAAA"}),
    ("jwt padded base64", lambda ca: {**_jwt_jwk(ca), "x": _jwt_jwk(ca)["x"] + "="}),
    ("jwt private key", lambda ca: {**_jwt_jwk(ca), "d": "AAAA"}),
    ("jwt rsa small", lambda ca: {"kty": "RSA", "use": "jwt-svid", "kid": "r", "n": "AQAB" * 4, "e": "AQAB"}),
]


@pytest.mark.parametrize(("name", "make"), MALFORMED_ELEMENTS, ids=[m[0] for m in MALFORMED_ELEMENTS])
def test_malformed_element_is_ignored_element_wise(ca_a: TestCA, name: str, make) -> None:
    good = _jwks(ca_a)["keys"]
    b = Bundle.from_jwks(_doc([make(ca_a), *good]))
    assert b.x509_authorities == (ca_a.root,) and set(b.jwt_authorities) == {ca_a.jwt_kid}
    assert len(b.skipped) == 1 and "ignored" in b.skipped[0]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "'keys'"),
        (b'{"keys": null}', "must be a list"),
        (b'{"keys": {}}', "must be a list"),
        (b'{"keys": [], "keys": []}', "duplicate"),
        (b'{"keys": [{"kty": "EC", "kty": "RSA"}]}', "duplicate"),
        (b'{"keys": [], "spiffe_sequence": -1}', "spiffe_sequence"),
        (b'{"keys": [], "spiffe_sequence": 1.5}', "spiffe_sequence"),
        (b'{"keys": [], "spiffe_sequence": true}', "spiffe_sequence"),
        (b'{"keys": [], "spiffe_sequence": 18446744073709551616}', "spiffe_sequence"),
        (b'{"keys": [], "spiffe_refresh_hint": "300"}', "spiffe_refresh_hint"),
        (b'{"keys": [], "spiffe_refresh_hint": NaN}', "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_jwks_document_errors(data: bytes, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        Bundle.from_jwks(data, trust_domain="a.test")


def test_jwks_duplicate_kid_rejected(ca_a: TestCA) -> None:
    jwk = _jwt_jwk(ca_a)
    with pytest.raises(BundleError, match="share kid"):
        Bundle.from_jwks(_doc([jwk, jwk]), trust_domain="a.test")


# -- load / sniff / BundleSet


def test_load_sniffs_format(tmp_path, ca_a: TestCA) -> None:
    (tmp_path / "b.pem").write_bytes(ca_a.bundle().to_pem())
    (tmp_path / "b.json").write_bytes(ca_a.bundle().to_jwks())
    assert Bundle.load(tmp_path / "b.pem").x509_authorities == (ca_a.root,)
    assert Bundle.load(tmp_path / "b.json") == ca_a.bundle()
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.load(tmp_path / "missing.pem")
    (tmp_path / "bad.json").write_bytes(b"{nope")
    with pytest.raises(BundleError, match="bad.json"):
        Bundle.load(tmp_path / "bad.json")


def test_bundle_set(tmp_path, ca_a: TestCA, ca_b: TestCA) -> None:
    (tmp_path / "a.pem").write_bytes(ca_a.bundle().to_pem())
    (tmp_path / "b.json").write_bytes(ca_b.bundle().to_jwks())
    bs = BundleSet.load(tmp_path / "a.pem", tmp_path / "b.json")
    assert bs.trust_domains == frozenset({TrustDomain("a.test"), TrustDomain("b.test")})
    assert bs.for_trust_domain("b.test") == ca_b.bundle()
    assert bs.get(TrustDomain("a.test")).x509_authorities == (ca_a.root,)
    assert bs.get("a.test") is None  # keys are TrustDomains, never strings
    assert len(bs) == 2 and TrustDomain("a.test") in bs
    with pytest.raises(VerificationError, match="no trust bundle for trust domain 'c.test'"):
        bs.for_trust_domain("c.test")
    with pytest.raises(BundleError, match="two bundles"):
        BundleSet.load(tmp_path / "a.pem", tmp_path / "a.pem")
    replaced = bs.replace(Bundle("a.test"))
    assert replaced.for_trust_domain("a.test").x509_authorities == () and bs.for_trust_domain("a.test").x509_authorities
    assert bs.without(TrustDomain("a.test")).trust_domains == frozenset({TrustDomain("b.test")})
    with pytest.raises(AttributeError):
        bs._by_td = {}  # type: ignore[misc]
    with pytest.raises(BundleError):
        BundleSet(["not a bundle"])  # type: ignore[list-item]


def test_bundle_immutable_and_typed(ca_a: TestCA) -> None:
    b = ca_a.bundle()
    with pytest.raises(AttributeError):
        b.sequence = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        b.jwt_authorities["x"] = None  # type: ignore[index]
    for bad in (lambda: Bundle("a.test", ["pem"]), lambda: Bundle("a.test", [], {"": ca_a.jwt_key.public_key()}),
                lambda: Bundle("a.test", [], {"k": "key"}), lambda: Bundle("a.test", sequence=-1), lambda: Bundle("A")):
        with pytest.raises(BundleError):
            bad()


# -- fuzz: whatever the bytes, the parser answers a Bundle or a BundleError


_json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)
_jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["EC", "RSA", "OKP", "", 3]),
        "use": st.sampled_from(["x509-svid", "jwt-svid", "X509-SVID", None]),
        "kid": st.one_of(st.text(max_size=8), st.integers()),
        "crv": st.sampled_from(["P-256", "P-384", "P-521", "secp256k1"]),
        "x": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789-_=", max_size=90),
        "y": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789-_=", max_size=90),
        "n": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", max_size=400),
        "e": st.sampled_from(["AQAB", "AA", "Aw", "", "AQ"]),
        "x5c": st.lists(st.text(max_size=30), max_size=2),
    },
)


def _parse_or_error(data: bytes) -> None:
    try:
        b = Bundle.from_jwks(data, trust_domain="fuzz.test")
    except BundleError:
        return
    assert b.trust_domain.name == "fuzz.test"
    assert Bundle.from_jwks(b.to_jwks(), trust_domain="fuzz.test") == b


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_jwks_bytes(data: bytes) -> None:
    _parse_or_error(data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["keys", "spiffe_sequence", "spiffe_refresh_hint", "other"]), _json, max_size=4))
def test_fuzz_jwks_documents(doc: dict) -> None:
    _parse_or_error(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(_jwk_like, max_size=5))
def test_fuzz_jwks_keys(keys: list) -> None:
    _parse_or_error(_doc(keys))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_pem_and_sniff(data: bytes) -> None:
    for raw in (data, b"-----BEGIN CERTIFICATE-----\n" + data + b"\n-----END CERTIFICATE-----\n"):
        try:
            Bundle.parse(raw, trust_domain="fuzz.test")
        except BundleError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_bundle(data: st.DataObject) -> None:
    ca = _FUZZ_CA
    doc = _jwks(ca)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        jwk = doc["keys"][data.draw(st.integers(min_value=0, max_value=len(doc["keys"]) - 1))]
        field = data.draw(st.sampled_from(sorted(jwk) + ["d", "kid"]))
        if data.draw(st.booleans()):
            jwk.pop(field, None)
        else:
            jwk[field] = data.draw(_json)
    try:
        b = Bundle.from_jwks(_doc(doc["keys"]), trust_domain="a.test")
    except BundleError:
        return
    assert len(b.x509_authorities) + len(b.jwt_authorities) + len(b.skipped) == 2
    assert set(b.x509_authorities) <= {ca.root}


_FUZZ_CA = TestCA.create("a.test")
