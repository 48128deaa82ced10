"""Signing and verifying round trips: directories, single files, sources, key types, the result value."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ztid.errors import SigningError
from ztid.signing import default_signature_path, require_signed, sign_model, verify_model
from ztid.signing_format import check_signing_key
from ztid.source import StaticSource
from ztid.svid import X509Svid

TRAINING = "spiffe://ai-platform.example/training/job-7"  # as conftest.py issues it
PIPELINE = "spiffe://ai-platform.example/pipeline/nightly"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_directory_round_trip_result(make_model, training, bundles, policy):
    model = make_model()
    signed = sign_model(model, training)
    assert signed.signature == model.with_name("model.sig") == default_signature_path(model)
    assert str(signed.signer) == TRAINING
    result = verify_model(model, bundles=bundles, policy=policy)
    assert result.allowed and result.content_checked
    assert str(result.signer) == TRAINING and result.identity.component == "training"
    assert result.decision.allowed and result.decision.code == "allowed" and result.decision.action == "write"
    assert result.decision.target == "registry" and result.decision.policy_digest == policy.digest
    assert result.signed_at == signed.signed_at
    # the digest list is exactly sha256 of each file, by relative name
    files = sorted(p for p in model.rglob("*") if p.is_file())
    assert [(d.name, d.algorithm, d.digest) for d in result.digests] == [
        (p.relative_to(model).as_posix(), "sha256", _sha256(p)) for p in files]
    assert result.digests == signed.digests
    # the subject digest is sha256 over the per-file digests in name order (model-signing v1.0)
    assert result.model_digest == hashlib.sha256(b"".join(bytes.fromhex(d.digest) for d in result.digests)).hexdigest()
    doc = result.to_dict()
    assert doc["valid"] is True and doc["signer"] == TRAINING and json.dumps(doc)
    assert require_signed(model, bundles=bundles, policy=policy).signer == result.signer


def test_single_file_round_trip(tmp_path, training, bundles, policy):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 4096 + b"weights")
    signed = sign_model(weights, training)
    assert signed.signature == tmp_path / "model.safetensors.sig"
    result = require_signed(weights, bundles=bundles, policy=policy)
    assert [(d.name, d.digest) for d in result.digests] == [(".", _sha256(weights))]
    weights.write_bytes(b"\x00" * 4096 + b"weightz")
    with pytest.raises(SigningError, match="modified"):
        require_signed(weights, bundles=bundles, policy=policy)


def test_signature_inside_the_directory_is_excluded_and_recorded(make_model, training, bundles, policy):
    model = make_model()
    sig = model / "model.sig"
    sign_model(model, training, signature=sig)
    result = verify_model(model, signature=sig, bundles=bundles, policy=policy)
    assert result.allowed and result.ignored == ("model.sig",)
    assert "model.sig" not in [d.name for d in result.digests]


def test_explicit_ignore_paths_are_signed(make_model, training, bundles, policy):
    model = make_model()
    (model / "README.md").write_text("notes")
    sign_model(model, training, ignore_paths=["README.md"])
    (model / "README.md").write_text("edited notes")
    result = verify_model(model, bundles=bundles, policy=policy)
    assert result.allowed and result.ignored == ("README.md",)


def test_git_files_are_signed_like_any_other(make_model, training, bundles, policy):
    """model-signing ignores .git* by default; ztid hashes everything unless told otherwise."""
    model = make_model()
    (model / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    sign_model(model, training)
    (model / ".gitattributes").write_text("*.safetensors -filter\n")
    with pytest.raises(SigningError, match=r"modified: '\.gitattributes'"):
        verify_model(model, bundles=bundles, policy=policy)


def test_pipeline_may_publish_too(make_model, ca, bundles, policy):
    model = make_model()
    sign_model(model, ca.issue(PIPELINE))
    assert verify_model(model, bundles=bundles, policy=policy).identity.component == "pipeline"


def test_sign_from_a_source_snapshot(make_model, training, bundles, policy):
    model = make_model()
    source = StaticSource(training, bundles)
    try:
        signed = sign_model(model, source)
    finally:
        source.close()
    assert str(signed.signer) == TRAINING
    assert verify_model(model, bundles=bundles, policy=policy).allowed


def test_nothing_but_the_signature_is_written(make_model, training, tmp_path):
    model = make_model()
    before = {p for p in tmp_path.rglob("*")}
    signed = sign_model(model, training)
    after = {p for p in tmp_path.rglob("*")}
    assert after - before == {signed.signature}
    text = signed.signature.read_text()
    assert "PRIVATE KEY" not in text
    doc = json.loads(text)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert len(doc["verificationMaterial"]["x509CertificateChain"]["certificates"]) == 2  # leaf + intermediate


def _leaf_with_key(ca, key, spiffe_id: str) -> X509Svid:
    """A throwaway SVID builder for key types the dev CA does not issue (P-384, P-521, secp256k1)."""
    issuer, issuer_key = ca.signer
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztid test")]))
        .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(ca.key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return X509Svid.from_parts([cert, issuer], key)


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()], ids=["P-384", "P-521"])
def test_p384_and_p521_keys_work(make_model, ca, bundles, policy, curve):
    svid = _leaf_with_key(ca, ec.generate_private_key(curve), TRAINING)
    model = make_model()
    sign_model(model, svid)
    assert verify_model(model, bundles=bundles, policy=policy).allowed


def test_other_key_types_are_refused_before_hashing(make_model, ca):
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    svid = _leaf_with_key(ca, ec.generate_private_key(ec.SECP256K1()), TRAINING)
    with pytest.raises(SigningError, match="EC P-256/P-384/P-521 keys only, not curve secp256k1"):
        sign_model(make_model(), svid)
    for key in (rsa.generate_private_key(65537, 2048).public_key(), ed25519.Ed25519PrivateKey.generate().public_key()):
        with pytest.raises(SigningError, match="EC P-256/P-384/P-521 keys only"):
            check_signing_key(key)
