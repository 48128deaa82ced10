"""`ztid sign` / `ztid verify` in-process, model-signing's own CLI as a subprocess, the audit hook."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ztid.cli import main
from ztid.signing import sign_model
from ztid.svid import X509Svid

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policy.yaml"
MODEL_SIGNING = Path(sys.executable).with_name("model_signing")
TRAINING = "spiffe://ai-platform.example/training/job-7"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _svid_files(tmp_path: Path, svid: X509Svid, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.write_bytes(svid.chain_pem())
    key.write_bytes(svid.key_pem())
    key.chmod(0o600)
    return cert, key


def test_sign_then_verify(capsys, tmp_path, make_model, training, root_pem):
    model = make_model()
    cert, key = _svid_files(tmp_path, training, "training")
    code, out, err = run(capsys, "sign", model, "--cert", cert, "--key", key, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["signer"] == TRAINING and doc["files"] == 4 and Path(doc["signature"]).is_file()
    code, out, err = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY)
    assert code == 0, err
    assert out.startswith(f"valid: {model} signed by {TRAINING} (training)")
    code, out, _ = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True and doc["decision"]["code"] == "allowed" and len(doc["digests"]) == 4


def test_verify_exit_1_for_invalid_or_refused(capsys, tmp_path, make_model, training, inference, root_pem):
    model = make_model()
    code, out, _ = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY, "--json")
    assert code == 1 and json.loads(out)["valid"] is False and "unsigned" in json.loads(out)["error"]
    sign_model(model, inference)
    code, out, _ = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False and doc["decision"]["code"] == "no_matching_rule"
    assert doc["identity"]["component"] == "inference"
    code, out, _ = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY, "--action", "read")
    assert code == 0, out
    sign_model(model, training)
    (model / "config.json").write_text("{}")
    code, out, _ = run(capsys, "verify", model, "--bundle", root_pem, "--policy", POLICY)
    assert code == 1 and out.startswith("invalid:") and "modified: 'config.json'" in out


def test_verify_exit_2_for_unreadable_input(capsys, tmp_path, make_model, training, root_pem):
    model = make_model()
    sign_model(model, training)
    code, _, err = run(capsys, "verify", tmp_path / "absent", "--bundle", root_pem, "--policy", POLICY)
    assert code == 2 and "does not exist" in err
    code, out, _ = run(capsys, "verify", model, "--bundle", tmp_path / "nope.pem", "--policy", POLICY, "--json")
    assert code == 2 and json.loads(out)["ok"] is False
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ncomponents: [\n")
    code, _, err = run(capsys, "verify", model, "--bundle", root_pem, "--policy", broken)
    assert code == 2 and "policy" in err
    code, _, err = run(capsys, "verify", model, "--policy", POLICY)
    assert code == 2 and "--bundle" in err


def test_sign_exit_codes(capsys, tmp_path, make_model, ca):
    model = make_model()
    expired = ca.expired(TRAINING)
    cert, key = tmp_path / "old.pem", tmp_path / "old.key"
    cert.write_bytes(expired.chain_pem())
    key.write_bytes(expired.key_pem())
    code, _, err = run(capsys, "sign", model, "--cert", cert, "--key", key)
    assert code == 1 and "not valid now" in err and not model.with_name("model.sig").exists()
    code, _, err = run(capsys, "sign", model, "--cert", cert, "--key", tmp_path / "missing.key")
    assert code == 2 and "cannot read private key" in err
    code, _, err = run(capsys, "sign", model)
    assert code == 2 and "--cert" in err
    code, _, err = run(capsys, "sign", tmp_path / "absent", "--cert", cert, "--key", key)
    assert code == 2 and "does not exist" in err


def _model_signing(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_model_signing_cli_verifies_a_ztid_signature(tmp_path, make_model, training, root_pem):
    """Interop: model-signing's own verifier, given only the trust bundle's root, accepts what ztid signs."""
    model = make_model()
    signed = sign_model(model, training)
    proc = _model_signing("verify", "certificate", model, "--signature", signed.signature,
                          "--certificate_chain", root_pem)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verification succeeded" in proc.stdout + proc.stderr
    (model / "tokenizer.txt").write_text("tampered")
    proc = _model_signing("verify", "certificate", model, "--signature", signed.signature,
                          "--certificate_chain", root_pem)
    assert proc.returncode != 0


def test_model_signing_cli_single_file_and_signature_inside(tmp_path, make_model, training, root_pem):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"w" * 1000)
    signed = sign_model(weights, training)
    proc = _model_signing("verify", "certificate", weights, "--signature", signed.signature, "--certificate_chain", root_pem)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = make_model()
    signed = sign_model(model, training, signature=model / "model.sig")
    proc = _model_signing("verify", "certificate", model, "--signature", signed.signature, "--certificate_chain", root_pem)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_what_ztid_adds_over_pooled_roots(capsys, tmp_path, make_model, ca, partner):
    """model-signing pools every root it is given: a partner-signed leaf naming our trust domain passes
    there, while ztid checks the chain against our trust domain's bundle only."""
    forged = partner.foreign(TRAINING)
    model = make_model()
    signed = sign_model(model, X509Svid.from_parts(forged.chain, forged.key))
    pooled = tmp_path / "pooled.pem"
    pooled.write_bytes(ca.bundle().to_pem() + partner.bundle().to_pem())
    proc = _model_signing("verify", "certificate", model, "--signature", signed.signature, "--certificate_chain", pooled)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours, theirs = tmp_path / "ours.pem", tmp_path / "theirs.pem"
    ours.write_bytes(ca.bundle().to_pem())
    theirs.write_bytes(partner.bundle().to_pem())
    code, out, _ = run(capsys, "verify", model, "--bundle", ours, "--bundle", theirs, "--policy", POLICY, "--json")
    assert code == 1 and "does not chain to the trust bundle of 'ai-platform.example'" in json.loads(out)["error"]


def _run_dir(tmp_path: Path, make_model, svid) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = make_model()
    model = model.rename(run_dir / "model")
    weights = run_dir / "head.bin"
    weights.write_bytes(b"head" * 100)
    sign_model(model, svid)
    sign_model(weights, svid)
    (run_dir / "metadata.json").write_text(json.dumps({"output_artifacts": [
        {"path": "model", "signature": "model.sig", "sha256": "00" * 32},
        {"path": "head.bin", "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "signature": "head.bin.sig"},
    ]}))
    return run_dir


def _ids(out: str) -> list[str]:
    return sorted(f["id"] for f in json.loads(out)["findings"])


def test_audit_artifacts_verifies_ztid_signatures(capsys, tmp_path, make_model, training, inference, root_pem):
    run_dir = _run_dir(tmp_path, make_model, training)
    base = ("audit", "artifacts", run_dir, "--json", "--fail-on", "critical")
    code, out, _ = run(capsys, *base)
    assert "ZT-ART-008" in _ids(out)  # recorded but not verified without --bundle/--policy
    code, out, err = run(capsys, *base, "--bundle", root_pem, "--policy", POLICY)
    assert code == 0, err
    assert "ZT-ART-008" not in _ids(out) and "ZT-ART-009" not in _ids(out)
    (run_dir / "head.bin").write_bytes(b"evil" * 100)
    code, out, _ = run(capsys, *base, "--bundle", root_pem, "--policy", POLICY)
    findings = {(f["id"], f["resource"]["name"]): f["message"] for f in json.loads(out)["findings"]}
    assert code == 1 and "modified" in findings[("ZT-ART-009", "head.bin")]
    assert ("ZT-ART-009", "model") not in findings


def test_audit_artifacts_refuses_a_signer_the_policy_does_not_allow(capsys, tmp_path, make_model, inference, root_pem):
    run_dir = _run_dir(tmp_path, make_model, inference)
    code, out, _ = run(capsys, "audit", "artifacts", run_dir, "--json", "--bundle", root_pem, "--policy", POLICY)
    msgs = [f["message"] for f in json.loads(out)["findings"] if f["id"] == "ZT-ART-009"]
    assert code == 1 and len(msgs) == 2 and all("no_matching_rule" in m for m in msgs)


@pytest.mark.parametrize("opts", [["--bundle", "b.pem"], ["--policy", str(POLICY)]])
def test_audit_artifacts_needs_bundle_and_policy_together(capsys, tmp_path, opts):
    (tmp_path / "metadata.json").write_text('{"output_artifacts": []}')
    code, _, err = run(capsys, "audit", "artifacts", tmp_path, *opts)
    assert code == 2 and "both --bundle and --policy" in err


def test_audit_artifacts_signature_outside_the_run_is_not_followed(capsys, tmp_path, make_model, training, root_pem):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "w.bin").write_bytes(b"w")
    signed = sign_model(run_dir / "w.bin", training, signature=tmp_path / "outside.sig")
    (run_dir / "metadata.json").write_text(json.dumps({"output_artifacts": [
        {"path": "w.bin", "sha256": hashlib.sha256(b"w").hexdigest(), "signature": str(signed.signature)}]}))
    code, out, _ = run(capsys, "audit", "artifacts", run_dir, "--json", "--bundle", root_pem, "--policy", POLICY)
    msgs = [f["message"] for f in json.loads(out)["findings"] if f["id"] == "ZT-ART-009"]
    assert code == 1 and msgs and "not found inside the run directory" in msgs[0]


def test_sign_with_the_workload_api(capsys, tmp_path, make_model):
    """`ztid sign --socket`: the SVID and key come from a real Workload API server (the dev agent)."""
    import shutil
    import tempfile

    from ztid.agent.server import DevAgent
    from ztid.devca import DevCA

    ca_dir = tmp_path / "ca"
    DevCA.create("ai-platform.example").save(ca_dir)
    short = Path(tempfile.mkdtemp(prefix="zs", dir="/tmp"))  # unix socket paths are short
    try:
        with DevAgent(ca_dir, short / "a.sock", spiffe_id=TRAINING) as agent:
            model = make_model()
            code, out, err = run(capsys, "sign", model, "--socket", agent.endpoint, "--json")
        assert code == 0, err
        assert json.loads(out)["signer"] == TRAINING
        code, out, err = run(capsys, "verify", model, "--bundle", ca_dir / "bundle.pem", "--policy", POLICY)
        assert code == 0, out + err
        code, _, err = run(capsys, "sign", model, "--socket", agent.endpoint, "--cert", "x.pem")
        assert code == 2 and "not both" in err
    finally:
        shutil.rmtree(short, ignore_errors=True)
