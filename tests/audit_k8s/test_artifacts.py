"""`ztid audit artifacts`: hashes, signatures, mismatches, credential files, traversal, the signature hook."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.audit.artifacts import SignatureVerdict, audit_artifacts
from ztid.cli import main
from ztid.errors import AuditError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(tmp_path: Path, artifacts, *, name="metadata.json", files=None) -> Path:
    run = tmp_path / "run-7"
    run.mkdir(exist_ok=True)
    for rel, data in (files or {}).items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    (run / name).write_text(json.dumps({"run_id": "7", "output_artifacts": artifacts}))
    return run


def _ids(report) -> Counter:
    return Counter(f.rule.id for f in report.findings)


WEIGHTS = b"\x00weights" * 100


def test_clean_run(tmp_path):
    run = _run(tmp_path, [{"path": "model/weights.safetensors", "sha256": _sha(WEIGHTS), "signature": "model.sig"}],
               files={"model/weights.safetensors": WEIGHTS, "model.sig": b"{}"})
    assert _ids(audit_artifacts(run, verify_signature=lambda *a, **k: SignatureVerdict(True, "ok"))) == Counter()


def test_missing_hash_and_signature(tmp_path):
    run = _run(tmp_path, ["model/weights.safetensors"], files={"model/weights.safetensors": WEIGHTS})
    assert _ids(audit_artifacts(run)) == Counter({"ZT-ART-001": 1, "ZT-ART-002": 1})


def test_hash_mismatch_detects_one_flipped_byte(tmp_path):
    tampered = bytearray(WEIGHTS)
    tampered[5] ^= 1
    run = _run(tmp_path, {"weights": {"path": "weights.bin", "digest": "sha256:" + _sha(WEIGHTS), "sig": "w.sig"}},
               files={"weights.bin": bytes(tampered)})
    report = audit_artifacts(run)
    assert _ids(report) == Counter({"ZT-ART-003": 1, "ZT-ART-008": 1})
    assert report.findings[0].severity.label == "critical"


@pytest.mark.parametrize("entry", [
    {"path": "w.bin", "hash": _sha(WEIGHTS)},                      # bare hex, algorithm from the length
    {"path": "w.bin", "checksum": {"algorithm": "sha256", "value": _sha(WEIGHTS).upper()}},
    {"path": "w.bin", "sha512": hashlib.sha512(WEIGHTS).hexdigest()},
    {"uri": "file://w.bin", "hash": "SHA256:" + _sha(WEIGHTS)},
])
def test_hash_spellings(tmp_path, entry):
    run = _run(tmp_path, [dict(entry, signature="w.sig")], name="artifact_info.json", files={"w.bin": WEIGHTS})
    assert _ids(audit_artifacts(run)) == Counter({"ZT-ART-008": 1})


def test_weak_hash_missing_file_remote_and_traversal(tmp_path):
    run = _run(tmp_path, [
        {"path": "w.bin", "md5": "x", "hash": "md5:" + hashlib.md5(WEIGHTS).hexdigest(), "signature": "s"},
        {"path": "gone.bin", "sha256": "0" * 64, "signature": "s"},
        {"uri": "s3://bucket/model.bin", "sha256": "0" * 64, "signature": "s"},
        {"path": "../../etc/passwd", "sha256": "0" * 64},
    ], files={"w.bin": WEIGHTS})
    ids = _ids(audit_artifacts(run))
    assert ids == Counter({"ZT-ART-006": 1, "ZT-ART-005": 1, "ZT-ART-011": 1, "ZT-ART-007": 1, "ZT-ART-008": 1})


@pytest.mark.parametrize("rel, data, flagged", [
    (".env", b"HF_TOKEN=hf_x\n", True),
    (".env.production", b"A=1\n", True),
    ("keys/signing.pem", b"-----BEGIN EC PRIVATE KEY-----\nMHc=\n", True),
    ("keys/ca.pem", b"-----BEGIN CERTIFICATE-----\nMII=\n", False),
    ("home/.aws/credentials", b"[default]\n", True),
    ("ssh/id_ed25519", b"key", True),
    ("gcp/sa.json", b'{"type": "service_account", "private_key": "-----BEGIN"}', True),
    ("config.json", b'{"lr": 0.1}', False),
    ("tokenizer.json", b"{}", False),
    ("home/.docker/config.json", b"{}", True),
])
def test_credential_files(tmp_path, rel, data, flagged):
    run = _run(tmp_path, [], files={rel: data})
    hits = [f for f in audit_artifacts(run).findings if f.rule.id == "ZT-ART-004"]
    assert bool(hits) is flagged
    if hits:
        assert hits[0].resource.name == rel and data.decode(errors="replace")[:12] not in hits[0].message


def test_nested_metadata_paths_resolve_against_their_own_directory(tmp_path):
    run = _run(tmp_path, [], files={"steps/train/out/w.bin": WEIGHTS})
    (run / "steps/train/metadata.json").write_text(json.dumps(
        {"output_artifacts": [{"path": "out/w.bin", "sha256": _sha(WEIGHTS), "signature": "x"}]}))
    assert _ids(audit_artifacts(run)) == Counter({"ZT-ART-008": 1})


def test_run_without_metadata(tmp_path):
    (tmp_path / "w.bin").write_bytes(WEIGHTS)
    assert _ids(audit_artifacts(tmp_path)) == Counter({"ZT-ART-010": 1})


def test_signature_hook_is_called_and_its_refusal_reported(tmp_path):
    run = _run(tmp_path, [{"path": "w.bin", "sha256": _sha(WEIGHTS), "signature": "w.sig"}], files={"w.bin": WEIGHTS})
    calls = []

    def verify(artifact, signature, *, entry, run_dir):
        calls.append((artifact.name, signature, entry["path"], run_dir))
        return SignatureVerdict(False, "signer spiffe://ai-platform.example/ns/a/sa/inference may not write registry")

    report = audit_artifacts(run, verify_signature=verify)
    assert calls == [("w.bin", "w.sig", "w.bin", run.resolve())]  # no such file: the recorded string as is
    (run / "w.sig").write_bytes(b"{}")
    calls.clear()
    audit_artifacts(run, verify_signature=verify)
    assert calls == [("w.bin", run.resolve() / "w.sig", "w.bin", run.resolve())]  # a file: its absolute path
    assert _ids(report) == Counter({"ZT-ART-009": 1})
    assert "may not write registry" in report.findings[0].message


@pytest.mark.parametrize("doc, fragment", [
    ("[1, 2]", "expected a JSON object"),
    ('{"output_artifacts": 3}', "must be a list or an object"),
    ('{"output_artifacts": [3]}', "must be a path or an object"),
    ('{"output_artifacts": [{"sha256": "00"}]}', "names no path"),
    ("{", "malformed JSON"),
])
def test_malformed_metadata_is_audit_error(tmp_path, doc, fragment):
    (tmp_path / "metadata.json").write_text(doc)
    with pytest.raises(AuditError, match=fragment):
        audit_artifacts(tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                        lambda c: st.one_of(st.lists(c, max_size=3),
                                            st.dictionaries(st.sampled_from(
                                                ["output_artifacts", "path", "sha256", "hash", "digest", "uri",
                                                 "signature", "algorithm", "value", "hash_algorithm"]), c,
                                                max_size=4)), max_leaves=15))
def test_fuzz_metadata_never_crashes(tmp_path, doc):
    (tmp_path / "metadata.json").write_text(json.dumps(doc))
    try:
        audit_artifacts(tmp_path)
    except AuditError:
        pass


def test_cli_artifacts(tmp_path, capsys):
    run = _run(tmp_path, [{"path": "w.bin", "sha256": "0" * 64}], files={"w.bin": WEIGHTS, ".env": b"A=b\n"})
    code = main(["audit", "artifacts", str(run), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["audit"] == "artifacts"
    assert {f["id"] for f in doc["findings"]} == {"ZT-ART-002", "ZT-ART-003", "ZT-ART-004"}
    assert main(["audit", "artifacts", str(run), "--fail-on", "none"]) == 0


def test_sibling_signature_counts_and_a_raised_signing_error_is_a_refusal(tmp_path):
    from ztid.errors import SigningError

    run = _run(tmp_path, [{"path": "w.bin", "sha256": _sha(WEIGHTS)}], files={"w.bin": WEIGHTS, "w.bin.sig": b"{}"})
    assert _ids(audit_artifacts(run)) == Counter({"ZT-ART-008": 1})

    def verify(artifact, signature, *, entry, run_dir):
        assert signature == run.resolve() / "w.bin.sig"
        raise SigningError("signer spiffe://ai-platform.example/ns/a/sa/inference may not write registry")

    report = audit_artifacts(run, verify_signature=verify)
    assert _ids(report) == Counter({"ZT-ART-009": 1}) and "may not write" in report.findings[0].message

    def broken(artifact, signature, *, entry, run_dir):
        raise RuntimeError("bug in the verifier")

    with pytest.raises(RuntimeError):
        audit_artifacts(run, verify_signature=broken)
