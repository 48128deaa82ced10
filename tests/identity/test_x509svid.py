"""X509-SVID verification: one test per leaf/signing rule, time, chain and trust-domain checks."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ztid.bundle import Bundle, BundleSet
from ztid.errors import BundleError, SvidError, UsageError, VerificationError
from ztid.spiffeid import SpiffeId
from ztid.svid import X509Svid, parse_chain, spiffe_id_from_leaf, verify_x509_svid
from ztid.testing import Minted, TestCA

KU = TestCA.key_usage


def _rule(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    return getattr(exc_info.value, "rule", "")


def test_good_leaf_from_root(ca_a: TestCA, bundles: BundleSet) -> None:
    svid = ca_a.issue("spiffe://a.test/ns/x/sa/training")
    result = verify_x509_svid(svid.chain_pem(), bundles)
    assert result.spiffe_id == SpiffeId.parse("spiffe://a.test/ns/x/sa/training")
    assert result.leaf == svid.leaf
    assert result.chain == svid.cert_chain
    assert result.not_after == svid.not_after and result.not_after.tzinfo is not None


def test_good_leaf_via_intermediate(ca_a_inter: TestCA, bundles: BundleSet) -> None:
    svid = ca_a_inter.issue("spiffe://ai.test/w", dns_names=["localhost"])
    assert len(svid.cert_chain) == 2
    assert verify_x509_svid(list(svid.cert_chain), bundles).spiffe_id == svid.spiffe_id
    der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in svid.cert_chain)  # Workload API encoding
    assert verify_x509_svid(der, bundles).spiffe_id == svid.spiffe_id


def test_single_bundle_argument(ca_a: TestCA, ca_b: TestCA) -> None:
    svid = ca_a.issue("spiffe://a.test/w")
    assert verify_x509_svid(svid.chain_pem(), ca_a.bundle()).spiffe_id == svid.spiffe_id
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(svid.chain_pem(), ca_b.bundle())
    assert _rule(info) == "no-bundle"


# -- leaf rules (X509-SVID §2, §3.1, §4, §5.2): each broken on its own, each with a twin that passes


def _mint(test_ca: TestCA, /, **kw: object) -> Minted:
    return test_ca.mint("spiffe://a.test/w", **kw)  # type: ignore[arg-type]


LEAF_CASES = [
    ("no URI SAN (DNS only)", lambda ca: ca.dns_only(), "uri-san"),
    ("two spiffe URI SANs", lambda ca: ca.two_uri_sans(), "uri-san"),
    ("spiffe + https URI SANs", lambda ca: ca.mint(uris=["spiffe://a.test/w", "https://a.test/w"]), "uri-san"),
    ("https URI", lambda ca: ca.non_spiffe_uri(), "scheme"),
    ("sparfe scheme", lambda ca: ca.mint("sparfe://a.test/w"), "scheme"),
    ("uppercase scheme", lambda ca: ca.mint("SPIFFE://a.test/w"), "scheme"),
    ("invalid SPIFFE ID", lambda ca: ca.mint("spiffe://a.test/w//x"), "spiffe-id"),
    ("root path ID", lambda ca: ca.root_path_id(), "leaf-path"),
    ("cA=true", lambda ca: ca.ca_leaf(), "leaf-ca"),
    ("no basicConstraints", lambda ca: _mint(ca, ca=None), "leaf-ca"),
    ("no keyUsage", lambda ca: _mint(ca, key_usage=None), "leaf-key-usage"),
    ("keyUsage not critical", lambda ca: _mint(ca, key_usage_critical=False), "leaf-key-usage"),
    ("keyUsage without digitalSignature", lambda ca: _mint(ca, key_usage=KU(key_encipherment=True)), "leaf-key-usage"),
    ("keyUsage with keyCertSign", lambda ca: _mint(ca, key_usage=KU(digital_signature=True, key_cert_sign=True)), "leaf-key-usage"),
    ("keyUsage with cRLSign", lambda ca: _mint(ca, key_usage=KU(digital_signature=True, crl_sign=True)), "leaf-key-usage"),
    ("EKU serverAuth only", lambda ca: _mint(ca, eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "leaf-eku"),
    ("EKU clientAuth only", lambda ca: _mint(ca, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]), "leaf-eku"),
]


@pytest.mark.parametrize(("name", "make", "rule"), LEAF_CASES, ids=[c[0] for c in LEAF_CASES])
def test_leaf_rule(ca_a: TestCA, bundles: BundleSet, name: str, make, rule: str) -> None:
    minted = make(ca_a)
    with pytest.raises(SvidError) as info:
        verify_x509_svid(minted.chain_pem(), bundles)
    assert _rule(info) == rule, str(info.value)
    assert f"[rule: {rule}]" in str(info.value)
    with pytest.raises(SvidError):
        spiffe_id_from_leaf(minted.leaf)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"eku": None},  # EKU is optional
        {"eku_critical": True},  # EKU MAY be critical (§4.4)
        {"key_usage": KU(digital_signature=True, key_encipherment=True)},  # keyEncipherment MAY be set
        {"dns_names": ["w.example"]},  # other SAN types MAY be present
        {"subject": x509.Name([]), "san_critical": True},  # empty Subject with critical SAN
    ],
)
def test_leaf_rule_positive_twins(ca_a: TestCA, bundles: BundleSet, kw: dict) -> None:
    assert verify_x509_svid(_mint(ca_a, **kw).chain_pem(), bundles).spiffe_id == SpiffeId.parse("spiffe://a.test/w")


def test_empty_subject_needs_critical_san(ca_a: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError):
        verify_x509_svid(_mint(ca_a, subject=x509.Name([])).chain_pem(), bundles)


def test_unknown_critical_extension_rejected(ca_a: TestCA, bundles: BundleSet) -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    with pytest.raises(VerificationError):
        verify_x509_svid(_mint(ca_a, extra_extensions=[(ext, True)]).chain_pem(), bundles)
    assert verify_x509_svid(_mint(ca_a, extra_extensions=[(ext, False)]).chain_pem(), bundles)


# -- signing certificates (X509-SVID §3.2, §4.1, §4.3)


@pytest.mark.parametrize(
    ("kw", "rule"),
    [({"ca": False}, "signing-ca"), ({"key_cert_sign": False}, "signing-key-usage"), ({"uri": "spiffe://a.test/ca"}, "signing-path")],
)
def test_signing_certificate_rules(ca_a: TestCA, bundles: BundleSet, kw: dict, rule: str) -> None:
    minted = ca_a.with_bad_intermediate(**kw)
    with pytest.raises(SvidError) as info:
        verify_x509_svid(minted.chain_pem(), bundles)
    assert _rule(info) == rule
    with pytest.raises(SvidError):
        X509Svid.from_parts(minted.chain, minted.key)


def test_signing_certificate_twin_passes(ca_a: TestCA, bundles: BundleSet) -> None:
    assert verify_x509_svid(ca_a.with_bad_intermediate().chain_pem(), bundles).spiffe_id.trust_domain.name == "a.test"


def test_uri_name_constraints_are_rejected_by_the_verifier(ca_a: TestCA, bundles: BundleSet) -> None:
    # Documented limitation: cryptography's verifier does not support URI name constraints (X509-SVID §4.2 allows them).
    nc = x509.NameConstraints(permitted_subtrees=[x509.UniformResourceIdentifier("a.test")], excluded_subtrees=None)
    with pytest.raises(VerificationError, match="unsupported name constraint"):
        verify_x509_svid(ca_a.with_bad_intermediate(name_constraints=nc).chain_pem(), bundles)


# -- time, chain, trust


def test_expired(ca_a: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(ca_a.expired().chain_pem(), bundles)
    assert _rule(info) == "expired"


def test_not_yet_valid(ca_a: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(ca_a.not_yet_valid().chain_pem(), bundles)
    assert _rule(info) == "not-yet-valid"


def test_at_moves_the_validation_time(ca_a: TestCA, bundles: BundleSet) -> None:
    svid = ca_a.issue("spiffe://a.test/w", ttl=dt.timedelta(minutes=10))
    now = dt.datetime.now(dt.timezone.utc)
    assert verify_x509_svid(svid.chain_pem(), bundles, at=now + dt.timedelta(minutes=5))
    with pytest.raises(VerificationError):
        verify_x509_svid(svid.chain_pem(), bundles, at=now + dt.timedelta(hours=1))
    with pytest.raises(VerificationError):  # the root itself is not valid two days from now
        verify_x509_svid(svid.chain_pem(), bundles, at=now - dt.timedelta(days=2))
    with pytest.raises(UsageError):
        verify_x509_svid(svid.chain_pem(), bundles, at=now.replace(tzinfo=None))


def test_missing_intermediate(ca_a_inter: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(ca_a_inter.missing_intermediate().chain_pem(), bundles)
    assert _rule(info) == "chain"


def test_foreign_root_same_trust_domain_name(ca_a: TestCA, bundles: BundleSet) -> None:
    impostor = ca_a.other_root()  # also calls itself a.test, different key
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(impostor.issue("spiffe://a.test/w").chain_pem(), bundles)
    assert _rule(info) == "chain"


def test_self_signed_leaf(ca_a: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError):
        verify_x509_svid(ca_a.self_signed().chain_pem(), bundles)


def test_self_signed_leaf_cannot_become_its_own_anchor(ca_a: TestCA) -> None:
    # cryptography would accept a leaf that sits in the trust store; a bundle holds CA certificates only.
    minted = ca_a.self_signed()
    with pytest.raises(BundleError, match="not a CA"):
        Bundle.from_pem(minted.chain_pem(), trust_domain="a.test")
    with pytest.raises(BundleError, match="not a CA"):
        Bundle("a.test", [minted.leaf])


def test_tampered_signature(ca_a: TestCA, bundles: BundleSet) -> None:
    with pytest.raises(VerificationError, match="signature"):
        verify_x509_svid(ca_a.tampered().chain_pem(), bundles)


def test_tampered_intermediate(ca_a_inter: TestCA, bundles: BundleSet) -> None:
    svid = ca_a_inter.issue("spiffe://ai.test/w")
    chain = [svid.leaf, TestCA.tampered_copy(svid.cert_chain[1])]
    with pytest.raises(VerificationError):
        verify_x509_svid(chain, bundles)


def test_cross_trust_domain_leaf_rejected_with_both_bundles(ca_a: TestCA, ca_b: TestCA, bundles: BundleSet) -> None:
    # A leaf naming b.test signed by a.test's CA: a pooled store would accept it; per-domain verification must not.
    minted = ca_a.foreign("spiffe://b.test/impostor")
    assert ca_a.trust_domain in bundles and ca_b.trust_domain in bundles
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(minted.chain_pem(), bundles)
    assert _rule(info) == "chain"
    with pytest.raises(VerificationError):  # and with only a.test's bundle: no bundle for b.test
        verify_x509_svid(minted.chain_pem(), BundleSet([ca_a.bundle()]))


def test_no_bundle_for_trust_domain(ca_a: TestCA, ca_b: TestCA) -> None:
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(ca_a.issue("spiffe://a.test/w").chain_pem(), BundleSet([ca_b.bundle()]))
    assert _rule(info) == "no-bundle"


def test_bundle_with_empty_keys_makes_every_svid_invalid(ca_a: TestCA) -> None:
    empty = Bundle.from_jwks(b'{"keys": []}', trust_domain="a.test")
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(ca_a.issue("spiffe://a.test/w").chain_pem(), BundleSet([empty]))
    assert _rule(info) == "empty-bundle"


def test_anchor_removed_is_untrusted_at_once(ca_a: TestCA) -> None:
    svid = ca_a.issue("spiffe://a.test/w")
    second_root = ca_a.other_root().root
    current = BundleSet([ca_a.bundle().with_x509_authorities([ca_a.root, second_root])])
    assert verify_x509_svid(svid.chain_pem(), current)
    rotated = current.replace(current.for_trust_domain("a.test").without_x509_authority(ca_a.root))
    assert len(rotated.for_trust_domain("a.test").x509_authorities) == 1
    with pytest.raises(VerificationError):
        verify_x509_svid(svid.chain_pem(), rotated)
    assert verify_x509_svid(svid.chain_pem(), current)  # the old set is unchanged (immutable)


@pytest.mark.parametrize(
    "chain",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n", b"\x30\x82\x01", b"\x30\x03\x02\x01\x01", [], ["x"], 5],
)
def test_unparseable_chain(chain: object, bundles: BundleSet) -> None:
    with pytest.raises(SvidError) as info:
        verify_x509_svid(chain, bundles)  # type: ignore[arg-type]
    assert _rule(info) == "parse"


def test_parse_chain_keeps_order(ca_a_inter: TestCA) -> None:
    svid = ca_a_inter.issue("spiffe://ai.test/w")
    assert parse_chain(svid.chain_pem()) == svid.cert_chain


def test_bad_bundles_argument(ca_a: TestCA) -> None:
    with pytest.raises(UsageError):
        verify_x509_svid(ca_a.issue("spiffe://a.test/w").chain_pem(), {"a.test": ca_a.bundle()})  # type: ignore[arg-type]


# -- own SVID with key


def test_x509svid_parse_round_trip(ca_a_inter: TestCA) -> None:
    svid = ca_a_inter.issue("spiffe://ai.test/w")
    again = X509Svid.parse(svid.chain_pem(), svid.key_pem())
    assert again.spiffe_id == svid.spiffe_id and again.cert_chain == svid.cert_chain
    assert again.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert again.not_after == svid.leaf.not_valid_after_utc


def test_x509svid_key_mismatch(ca_a: TestCA) -> None:
    one, two = ca_a.issue("spiffe://a.test/one"), ca_a.issue("spiffe://a.test/two")
    with pytest.raises(SvidError) as info:
        X509Svid.parse(one.chain_pem(), two.key_pem())
    assert _rule(info) == "key-mismatch"


@pytest.mark.parametrize("key", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_x509svid_bad_key(ca_a: TestCA, key: bytes) -> None:
    with pytest.raises(SvidError) as info:
        X509Svid.parse(ca_a.issue("spiffe://a.test/w").chain_pem(), key)
    assert _rule(info) == "key"


def test_x509svid_encrypted_key_rejected(ca_a: TestCA) -> None:
    svid = ca_a.issue("spiffe://a.test/w")
    enc = svid.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(SvidError):
        X509Svid.parse(svid.chain_pem(), enc)


def test_x509svid_rejects_broken_leaf(ca_a: TestCA) -> None:
    for minted in (ca_a.root_path_id(), ca_a.ca_leaf(), ca_a.two_uri_sans()):
        with pytest.raises(SvidError):
            X509Svid.parse(minted.chain_pem(), minted.key_pem())


def test_x509svid_load(tmp_path, ca_a: TestCA) -> None:
    svid = ca_a.issue("spiffe://a.test/w")
    (tmp_path / "s.pem").write_bytes(svid.chain_pem())
    (tmp_path / "s.key").write_bytes(svid.key_pem())
    assert X509Svid.load(tmp_path / "s.pem", tmp_path / "s.key").spiffe_id == svid.spiffe_id
    with pytest.raises(SvidError) as info:
        X509Svid.load(tmp_path / "missing.pem", tmp_path / "s.key")
    assert _rule(info) == "read"


def test_x509svid_other_key_types(ca_a: TestCA) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SvidError):
        X509Svid.from_parts(ca_a.issue("spiffe://a.test/w").cert_chain, other)
