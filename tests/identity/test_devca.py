"""DevCA: certificate profile, save/load round trip, file permissions, refusal to clobber."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ztid.bundle import Bundle, BundleSet
from ztid.devca import DevCA
from ztid.errors import ConfigError, IdentityError, KeyringError, UsageError
from ztid.svid import verify_x509_svid


def _ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_root_profile() -> None:
    ca = DevCA.create("dev.test")
    bc = _ext(ca.root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = _ext(ca.root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert _ext(ca.root, x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://dev.test"]
    ski = _ext(ca.root, x509.SubjectKeyIdentifier).value
    assert _ext(ca.root, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ca.root.signature_hash_algorithm.name == "sha256"


def test_leaf_profile_and_ttl() -> None:
    ca = DevCA.create("dev.test", intermediate=True)
    svid = ca.issue("spiffe://dev.test/w", dns_names=["localhost"])
    leaf = svid.leaf
    assert _ext(leaf, x509.BasicConstraints).value.ca is False
    ku = _ext(leaf, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign and not ku.key_encipherment
    assert set(_ext(leaf, x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = _ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://dev.test/w"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == _ext(ca.intermediate, x509.SubjectKeyIdentifier).value.digest
    life = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(minutes=59) < life <= dt.timedelta(hours=1, minutes=1)
    assert svid.cert_chain == (leaf, ca.intermediate)
    assert _ext(ca.intermediate, x509.BasicConstraints).value.path_length == 0


def test_leaf_never_outlives_ca() -> None:
    ca = DevCA.create("dev.test", ttl=dt.timedelta(hours=2))
    svid = ca.issue("spiffe://dev.test/w", ttl=dt.timedelta(days=30))
    assert svid.not_after <= ca.root.not_valid_after_utc


def test_issue_rejects() -> None:
    ca = DevCA.create("dev.test")
    with pytest.raises(UsageError, match="trust domain"):
        ca.issue("spiffe://other.test/w")
    with pytest.raises(UsageError, match="path"):
        ca.issue("spiffe://dev.test")
    with pytest.raises(UsageError):
        ca.issue("spiffe://dev.test/w", ttl=dt.timedelta(0))
    with pytest.raises(IdentityError):
        ca.issue("spiffe://dev.test/w/")
    with pytest.raises(IdentityError):
        DevCA.create("Bad Domain")
    with pytest.raises(UsageError):
        DevCA.create("dev.test", ttl=dt.timedelta(seconds=-1))


def test_save_load_round_trip_and_permissions(tmp_path) -> None:
    ca = DevCA.create("dev.test", intermediate=True)
    d = ca.save(tmp_path / "ca")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in ("ca.key", "intermediate.key", "jwt.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    for name in ("bundle.pem", "bundle.json", "ca.pem", "intermediate.pem", "jwt.kid"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o644, name
    assert Bundle.load(d / "bundle.pem").x509_authorities == (ca.root,)
    assert Bundle.load(d / "bundle.json") == ca.bundle()
    again = DevCA.load(d)
    assert again.trust_domain == ca.trust_domain and again.root == ca.root and again.intermediate == ca.intermediate
    assert again.jwt_kid == ca.jwt_kid and again.bundle() == ca.bundle()
    svid = again.issue("spiffe://dev.test/w")  # the reloaded keys still sign for the saved root
    assert verify_x509_svid(svid.chain_pem(), BundleSet.load(d / "bundle.pem")).spiffe_id == svid.spiffe_id


def test_save_refuses_to_overwrite(tmp_path) -> None:
    DevCA.create("dev.test").save(tmp_path)
    with pytest.raises(UsageError, match="refusing"):
        DevCA.create("dev.test").save(tmp_path)
    DevCA.create("dev.test").save(tmp_path, overwrite=True)


def test_load_rejects_loose_key_permissions(tmp_path) -> None:
    DevCA.create("dev.test").save(tmp_path)
    os.chmod(tmp_path / "ca.key", 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        DevCA.load(tmp_path)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ConfigError):
        DevCA.load(tmp_path / "nothing")
    DevCA.create("dev.test").save(tmp_path)
    (tmp_path / "ca.pem").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="ca.pem"):
        DevCA.load(tmp_path)
    other = tmp_path / "other"
    DevCA.create("dev.test").save(other)
    (other / "ca.pem").write_bytes(DevCA.create("dev.test").root.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="does not match"):
        DevCA.load(other)


def test_bundle_holds_jwt_key() -> None:
    ca = DevCA.create("dev.test")
    b = ca.bundle()
    assert list(b.jwt_authorities) == [ca.jwt_kid]
    assert b.jwt_authorities[ca.jwt_kid].public_numbers() == ca.jwt_key.public_key().public_numbers()


def test_mint_jwt_uses_jwtsvid() -> None:
    from ztid import jwtsvid

    ca = DevCA.create("dev.test")
    token = ca.mint_jwt("spiffe://dev.test/w", "spiffe://dev.test/api")
    verified = jwtsvid.validate_jwt_svid(token, BundleSet([ca.bundle()]), "spiffe://dev.test/api")
    assert str(verified.spiffe_id) == "spiffe://dev.test/w" and verified.kid == ca.jwt_kid
    with pytest.raises(UsageError):
        ca.mint_jwt("spiffe://other.test/w", "aud")
