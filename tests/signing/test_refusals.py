"""Every way a model must be refused: content, layout, signer, trust domain, time, policy, format."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ztid.bundle import BundleSet
from ztid.errors import SigningError, UsageError
from ztid.signing import require_signed, sign_model, verify_model
from ztid.signing_format import Claim, build_bundle
from ztid.svid import X509Svid

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"


def _refused(model, bundles, policy, match, **kw):
    with pytest.raises(SigningError, match=match):
        verify_model(model, bundles=bundles, policy=policy, **kw)
    with pytest.raises(SigningError, match=match):
        require_signed(model, bundles=bundles, policy=policy, **kw)


def test_modified_file(make_model, training, bundles, policy):
    model = make_model()
    sign_model(model, training)
    shard = model / "weights" / "shard-0.safetensors"
    data = bytearray(shard.read_bytes())
    data[1234] ^= 0x01
    shard.write_bytes(bytes(data))
    _refused(model, bundles, policy, r"modified: 'weights/shard-0\.safetensors'")


def test_extra_file(make_model, training, bundles, policy):
    model = make_model()
    sign_model(model, training)
    (model / "weights" / "backdoor.pkl").write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    _refused(model, bundles, policy, r"not signed \(extra\): 'weights/backdoor\.pkl'")


def test_missing_file(make_model, training, bundles, policy):
    model = make_model()
    sign_model(model, training)
    (model / "tokenizer.txt").unlink()
    _refused(model, bundles, policy, r"missing: 'tokenizer\.txt'")


def test_renamed_file(make_model, training, bundles, policy):
    model = make_model()
    sign_model(model, training)
    (model / "weights" / "shard-1.safetensors").rename(model / "weights" / "shard-9.safetensors")
    _refused(model, bundles, policy, r"not signed \(extra\): 'weights/shard-9\.safetensors'; missing: 'weights/shard-1")


def test_symlink_in_the_model_is_refused(make_model, training, bundles, policy, tmp_path):
    model = make_model()
    sign_model(model, training)
    (tmp_path / "elsewhere").write_text("x")
    (model / "link").symlink_to(tmp_path / "elsewhere")
    _refused(model, bundles, policy, "symlink")


def test_unsigned_model(make_model, bundles, policy):
    _refused(make_model(), bundles, policy, "is unsigned: no signature at")


def test_missing_model_path(tmp_path, bundles, policy):
    _refused(tmp_path / "nope", bundles, policy, "does not exist")


def test_signature_of_another_model(make_model, training, bundles, policy):
    a, b = make_model("a"), make_model("b")
    sign_model(a, training)
    _refused(b, bundles, policy, "modified", signature=a.with_name("a.sig"))


def test_tampered_signature_file(make_model, training, bundles, policy):
    """Rewriting a digest in the signed statement (to match a swapped file) breaks the DSSE signature."""
    model = make_model()
    signed = sign_model(model, training)
    doc = json.loads(signed.signature.read_text())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    signed.signature.write_text(json.dumps(doc))
    _refused(model, bundles, policy, "DSSE signature does not match")


def test_forged_leaf_from_a_foreign_ca_with_pooled_roots(make_model, partner, bundles, policy):
    """A leaf naming our trust domain, signed by the partner's CA: its root is in `bundles`, but not ours."""
    forged = partner.foreign(TRAINING)
    svid = X509Svid.from_parts(forged.chain, forged.key)
    model = make_model()
    sign_model(model, svid)
    _refused(model, bundles, policy, f"signer refused: .*does not chain to the trust bundle of '{TD}'")


def test_signer_from_a_trust_domain_without_a_bundle(make_model, bundles, policy):
    from ztid.testing import TestCA

    stranger = TestCA.create("stranger.example")
    model = make_model()
    sign_model(model, stranger.issue("spiffe://stranger.example/training/x"))
    _refused(model, bundles, policy, "no trust bundle for trust domain 'stranger.example'")


def test_valid_signer_of_an_unfederated_trust_domain_is_denied_by_policy(make_model, partner, bundles, policy):
    model = make_model()
    sign_model(model, partner.issue("spiffe://partner.example/training/job-1"))
    result = verify_model(model, bundles=bundles, policy=policy)
    assert not result.allowed and result.decision.code == "foreign_trust_domain"
    with pytest.raises(SigningError, match=r"\[foreign_trust_domain\]"):
        require_signed(model, bundles=bundles, policy=policy)


def test_signer_not_allowed_by_policy(make_model, inference, bundles, policy):
    model = make_model()
    sign_model(model, inference)
    result = verify_model(model, bundles=bundles, policy=policy)
    assert result.content_checked and not result.allowed
    assert result.identity.component == "inference" and result.decision.code == "no_matching_rule"
    with pytest.raises(SigningError, match=r"not allow to write 'registry' \[no_matching_rule\]"):
        require_signed(model, bundles=bundles, policy=policy)
    # the same signer may be fine for another question: inference may read the registry
    assert verify_model(model, bundles=bundles, policy=policy, action="read").allowed


def test_require_signed_stops_at_a_deny_before_hashing(make_model, inference, bundles, policy):
    model = make_model()
    sign_model(model, inference)
    (model / "extra").write_text("x")  # would also fail the content check; the deny comes first
    with pytest.raises(SigningError, match="no_matching_rule"):
        require_signed(model, bundles=bundles, policy=policy)


def test_sign_refuses_an_expired_svid(make_model, ca):
    expired = ca.expired(TRAINING)
    with pytest.raises(SigningError, match="is not valid now"):
        sign_model(make_model(), X509Svid.from_parts(expired.chain, expired.key))


def _forge(model, chain, key, claim):
    """Sign as a tool that skips ztid's checks would (an attacker holding an old key)."""
    from model_signing import hashing

    manifest = hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False).hash(model)
    sig = model.with_name(model.name + ".sig")
    sig.write_bytes(build_bundle(manifest, chain, key, claim))
    return sig


def _now():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def test_expired_at_signing_time_is_refused(make_model, ca, bundles, policy):
    expired = ca.expired(TRAINING)  # valid from 2 h ago to 1 h ago
    model = make_model()
    _forge(model, expired.chain, expired.key, Claim(TRAINING, _now()))
    _refused(model, bundles, policy, r"signer refused: .*expired at .*checked at the claimed signing time")


def test_not_yet_valid_at_signing_time_is_refused(make_model, ca, bundles, policy):
    early = ca.not_yet_valid(TRAINING)
    model = make_model()
    _forge(model, early.chain, early.key, Claim(TRAINING, _now()))
    _refused(model, bundles, policy, "not valid before")


def _old_root(td: str, days: int = 2):
    """A throwaway root valid since ``days`` ago (the dev CA's root is minted at test start)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old root")])
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=days)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def test_a_signature_outlives_its_short_lived_svid(make_model, ca, policy):
    """Verified at the signing time, not now: a model signed 90 minutes ago by an SVID that has since
    expired still verifies (the time is the signer's signed word; see docs/signing.md)."""
    from ztid.bundle import Bundle

    root, root_key = _old_root(TD)
    old = ca.mint(TRAINING, signer=(root, root_key), not_before=_now() - dt.timedelta(hours=2),
                  not_after=_now() - dt.timedelta(hours=1))
    model = make_model()
    _forge(model, old.chain, old.key, Claim(TRAINING, _now() - dt.timedelta(minutes=90)))
    bundles = BundleSet([Bundle(ca.trust_domain, (root,), {})])
    result = verify_model(model, bundles=bundles, policy=policy)
    assert result.allowed and result.signer_not_after < _now()
    # ...and the same key claiming "now" is refused
    _forge(model, old.chain, old.key, Claim(TRAINING, _now()))
    _refused(model, bundles, policy, "expired")


def test_signing_time_in_the_future_is_refused(make_model, ca, training, bundles, policy):
    model = make_model()
    _forge(model, training.cert_chain, training.private_key, Claim(TRAINING, _now() + dt.timedelta(minutes=30)))
    _refused(model, bundles, policy, "lies in the future")


def test_claim_naming_another_identity_is_refused(make_model, inference, bundles, policy):
    model = make_model()
    _forge(model, inference.cert_chain, inference.private_key, Claim(TRAINING, _now()))
    _refused(model, bundles, policy, "the ztid claim names .*training/job-7.* but the certificate is .*inference")


def test_root_removed_from_the_bundle_stops_trust(make_model, ca, partner, training, policy):
    model = make_model()
    sign_model(model, training)
    _refused(model, BundleSet([ca.bundle_without_root(), partner.bundle()]), policy, "no X.509 authorities")
    rotated = BundleSet([ca.other_root().bundle()])
    _refused(model, rotated, policy, "does not chain")


def test_signature_without_a_ztid_claim(make_model, training, bundles, policy, tmp_path):
    """A plain model-signing certificate signature carries no signing time ztid can check."""
    from model_signing import signing as ms_signing

    model = make_model()
    key, cert, chain = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "chain.pem"
    key.write_bytes(training.key_pem())
    key.chmod(0o600)
    cert.write_bytes(training.leaf.public_bytes(Encoding.PEM))
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in training.cert_chain[1:]))
    ms_signing.Config().use_certificate_signer(private_key=key, signing_certificate=cert, certificate_chain=[chain]).sign(
        model, model.with_name("model.sig"))
    _refused(model, bundles, policy, "carries no ztid claim")


def test_bad_argument_types_are_usage_errors(make_model, bundles, policy):
    model = make_model()
    with pytest.raises(UsageError):
        verify_model(model, bundles=[bundles], policy=policy)
    with pytest.raises(UsageError):
        verify_model(model, bundles=bundles, policy="policy.yaml")
    with pytest.raises(UsageError):
        sign_model(model, "not an svid")


def test_a_copy_keeps_its_signature_valid(make_model, training, bundles, policy, tmp_path):
    """Integrity is about content and names, not location: a copied model and signature still verify."""
    model = make_model()
    sign_model(model, training)
    copy = shutil.copytree(model, tmp_path / "copy" / "model")
    shutil.copy(model.with_name("model.sig"), copy.with_name("model.sig"))
    assert verify_model(copy, bundles=bundles, policy=policy).allowed


def test_audit_mode_policy_allows_with_would_deny(make_model, inference, bundles):
    from pathlib import Path

    from ztid.policy import parse_policy

    text = (Path(__file__).resolve().parents[2] / "policy.yaml").read_text().replace("mode: enforce", "mode: audit")
    audit = parse_policy(text, name="policy-audit.yaml")
    model = make_model()
    sign_model(model, inference)
    result = require_signed(model, bundles=bundles, policy=audit)
    assert result.allowed and result.decision.would_deny and result.decision.mode == "audit"


def test_oversized_signature_is_refused_unread(make_model, bundles, policy):
    from ztid.signing_format import MAX_SIGNATURE_BYTES

    model = make_model()
    with model.with_name("model.sig").open("wb") as f:
        f.truncate(MAX_SIGNATURE_BYTES + 10)
    _refused(model, bundles, policy, "larger than 64 MiB")
