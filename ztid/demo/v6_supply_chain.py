"""Demo chapter 6: the supply chain. A training job signs a model with its SVID; the registry and the
inference loader verify it with the signer pinned; tampered and wrongly signed copies are refused;
then the cluster audit looks at the shipped Kubernetes fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ztid.bundle import BundleSet
from ztid.devca import DevCA
from ztid.errors import SigningError
from ztid.signing import require_signed, sign_model, verify_model
from ztid.svid import X509Svid
from ztid.testing import TestCA

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/ns/vision/sa/training"
INFERENCE = f"spiffe://{TD}/ns/vision/sa/inference"
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "audit_k8s" / "fixtures"


def _ca(story) -> DevCA:  # type: ignore[no-untyped-def]
    """Chapter 1's CA when it ran in this work directory, else a fresh one."""
    ca_dir = story.workdir / "ca"
    if (ca_dir / "bundle.pem").is_file():
        return DevCA.load(ca_dir)
    ca = DevCA.create(TD, intermediate=True)
    ca.save(ca_dir)
    return ca


def _model(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"architectures": ["ResNet18"], "num_labels": 1000}\n')
    (root / "weights" / "model-00001-of-00002.safetensors").write_bytes(os.urandom(256 << 10))
    (root / "weights" / "model-00002-of-00002.safetensors").write_bytes(os.urandom(128 << 10))
    return root


def _short(exc: Exception, work: Path, width: int = 140) -> str:
    text = str(exc).replace(f"{work}/", "").split(": validation failed")[0]  # the why, not the verifier's detail
    return text if len(text) <= width else text[: width - 3] + "..."


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Sign, verify, refuse, audit; return whether every outcome was the expected one."""
    policy = story.policy
    story.title("6. Supply chain: models signed with SVIDs, verified with the signer pinned")
    ca = _ca(story)
    partner = TestCA.create("partner.example")
    bundles = BundleSet([ca.bundle(), partner.bundle()])
    work = story.workdir / "supply-chain"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    model = _model(work / "resnet18")
    training = ca.issue(TRAINING)
    signed = sign_model(model, training)
    story.say(f"the training job ({training.spiffe_id}) signs {model.name}/ with its SVID, key kept in memory:")
    story.say(f"  {signed.signature.name}: OpenSSF model-signing bundle, {len(signed.digests)} file digests, "
              f"signed at {signed.signed_at:%H:%M:%SZ}")
    story.say(f"  model-signing's own CLI accepts it too: model_signing verify certificate {model.name} "
              f"--signature {signed.signature.name} --certificate_chain ca/bundle.pem")

    # The copies that must be refused, each with its own signature beside it.
    tampered = Path(shutil.copytree(model, work / "resnet18-tampered"))
    shutil.copy(signed.signature, tampered.with_name(tampered.name + ".sig"))
    shard = tampered / "weights" / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[4096] ^= 0xFF
    shard.write_bytes(bytes(data))
    by_inference = Path(shutil.copytree(model, work / "resnet18-inference-signed"))
    sign_model(by_inference, ca.issue(INFERENCE))
    forged_dir = Path(shutil.copytree(model, work / "resnet18-forged"))
    forged = partner.foreign(TRAINING)  # names our training job, signed by the partner's CA
    sign_model(forged_dir, X509Svid.from_parts(forged.chain, forged.key))
    unsigned = Path(shutil.copytree(model, work / "resnet18-unsigned"))

    story.title("6a. The registry accepts a model only from a component allowed to write it")
    ok, rows = True, []
    for label, path, expect in [("signed by training", model, True), ("signed by inference", by_inference, False),
                                ("tampered copy", tampered, False), ("forged training SVID", forged_dir, False),
                                ("unsigned copy", unsigned, False)]:
        try:
            v = verify_model(path, bundles=bundles, policy=policy, target="registry", action="write")
            outcome = "ACCEPT" if v.allowed else "refuse"
            why = f"{v.signer} ({v.identity.component}): [{v.decision.code}] {v.decision.reason}"
            accepted = v.allowed
        except SigningError as exc:
            outcome, why, accepted = "refuse", _short(exc, work), False
        ok &= accepted == expect
        rows.append((label, outcome, why))
    story.table(["model", "registry", "why"], rows)

    story.title("6b. The inference server loads only what an allowed publisher signed")
    rows = []
    for label, path, expect in [("resnet18", model, True), ("resnet18-tampered", tampered, False),
                                ("resnet18-inference-signed", by_inference, False)]:
        try:
            v = require_signed(path, target="registry", bundles=bundles, policy=policy)
            rows.append((label, "loaded", f"signed by {v.signer} at {v.signed_at:%H:%M:%SZ}"))
            ok &= expect
        except SigningError as exc:
            rows.append((label, "REFUSED", _short(exc, work)))
            ok &= not expect
    story.table(["model", "require_signed", "detail"], rows)
    story.say("require_signed() runs before torch.load/from_pretrained: nothing unverified reaches a deserializer.")

    story.title("6c. ztid audit k8s on the shipped ML platform manifests")
    if not FIXTURES.is_dir():
        story.say(f"(fixtures not found at {FIXTURES}; run from a ztid checkout to see this part)")
        return ok
    from ztid.audit.findings import Severity
    from ztid.audit.k8s import audit_k8s

    bad = audit_k8s([FIXTURES / "platform-bad"], policy=policy)
    good = audit_k8s([FIXTURES / "platform-good"], policy=policy)
    story.say("$ ztid audit k8s tests/audit_k8s/fixtures/platform-bad --policy policy.yaml")
    story.say(bad.render_table(fail_on=Severity.HIGH))
    story.say("$ ztid audit k8s tests/audit_k8s/fixtures/platform-good --policy policy.yaml")
    story.say(good.render_table(fail_on=Severity.HIGH))
    ok &= bool(bad.at_or_above(Severity.HIGH)) and not good.at_or_above(Severity.HIGH)
    return ok
