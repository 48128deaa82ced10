"""The id, svid and ca verbs, in-process through ztid.cli.main and once as a real subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ztid.cli import main
from ztid.testing import TestCA


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--json")
    assert out.count("\n") == 1, out  # exactly one JSON object
    return code, json.loads(out)


# -- ztid id check


def test_id_check_valid(capsys) -> None:
    code, out, _ = run(capsys, "id", "check", "spiffe://ai.example/ns/a/sa/training")
    assert code == 0
    assert "trust domain: ai.example" in out and "/ns/a/sa/training" in out and "ns, a, sa, training" in out
    code, obj = run_json(capsys, "id", "check", "spiffe://ai.example/ns/a")
    assert code == 0 and obj == {"ok": True, "valid": True, "id": "spiffe://ai.example/ns/a", "trust_domain": "ai.example", "path": "/ns/a", "segments": ["ns", "a"]}


@pytest.mark.parametrize(("text", "rule"), [("spiffe://TD/x", "trust-domain-case"), ("http://td/x", "scheme"), ("spiffe://td/a/", "path-trailing-slash"), ("", "empty")])
def test_id_check_invalid(capsys, text: str, rule: str) -> None:
    code, out, _ = run(capsys, "id", "check", text)
    assert code == 1 and "invalid" in out and rule in out
    code, obj = run_json(capsys, "id", "check", text)
    assert code == 1 and obj["valid"] is False and obj["rule"] == rule and obj["input"] == text


def test_id_check_usage(capsys) -> None:
    code, _, err = run(capsys, "id", "check")
    assert code == 2 and "usage" in err


# -- ztid ca + ztid svid


@pytest.fixture()
def ca_dir(tmp_path, capsys):
    code, out, _ = run(capsys, "ca", "init", "--trust-domain", "cli.test", "--intermediate", str(tmp_path / "ca"))
    assert code == 0 and "cli.test" in out
    return tmp_path / "ca"


def test_ca_init_json_and_refusal(tmp_path, capsys) -> None:
    code, obj = run_json(capsys, "ca", "init", "--trust-domain", "j.test", str(tmp_path / "ca"))
    assert code == 0 and obj["trust_domain"] == "j.test" and obj["bundle"].endswith("bundle.pem")
    assert (tmp_path / "ca" / "bundle.pem").exists() and (tmp_path / "ca" / "ca.key").exists()
    code, obj = run_json(capsys, "ca", "init", "--trust-domain", "j.test", str(tmp_path / "ca"))
    assert code == 2 and obj["ok"] is False and "refusing" in obj["message"]
    code, _, _ = run(capsys, "ca", "init", "--trust-domain", "j.test", "--force", str(tmp_path / "ca"))
    assert code == 0
    code, _, _ = run(capsys, "ca", "init", "--trust-domain", "Bad TD", str(tmp_path / "ca2"))
    assert code == 2
    code, _, _ = run(capsys, "ca", "init", "--trust-domain", "j.test", "--ttl", "soon", str(tmp_path / "ca3"))
    assert code == 2


def test_ca_issue_and_svid_verify(ca_dir, tmp_path, capsys) -> None:
    prefix = tmp_path / "train"
    code, obj = run_json(capsys, "ca", "issue", str(ca_dir), "spiffe://cli.test/training", "--ttl", "30m", "--out", str(prefix))
    assert code == 0 and obj["spiffe_id"] == "spiffe://cli.test/training" and obj["chain_length"] == 2
    assert stat.S_IMODE(os.stat(f"{prefix}.key").st_mode) == 0o600
    assert open(f"{prefix}.key", "rb").read().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8

    code, out, _ = run(capsys, "svid", "verify", f"{prefix}.pem", "--bundle", str(ca_dir / "bundle.pem"))
    assert code == 0 and "valid X509-SVID: spiffe://cli.test/training" in out
    code, obj = run_json(capsys, "svid", "verify", f"{prefix}.pem", "--bundle", str(ca_dir / "bundle.json"))
    assert code == 0 and obj["valid"] is True and obj["trust_domain"] == "cli.test"
    code, obj = run_json(capsys, "svid", "verify", f"{prefix}.pem", "--bundle", str(ca_dir / "bundle.pem"), "--at", "2099-01-01T00:00:00Z")
    assert code == 1 and obj["valid"] is False and obj["rule"] in ("expired", "chain")

    code, out, _ = run(capsys, "svid", "inspect", f"{prefix}.pem")
    assert code == 0 and "spiffe://cli.test/training" in out and "signing certificate" in out
    code, obj = run_json(capsys, "svid", "inspect", f"{prefix}.pem")
    assert code == 0 and obj["spiffe_id"] == "spiffe://cli.test/training" and len(obj["certificates"]) == 2


def test_ca_issue_errors(ca_dir, tmp_path, capsys) -> None:
    assert run(capsys, "ca", "issue", str(ca_dir), "spiffe://other.test/w", "--out", str(tmp_path / "x"))[0] == 2
    assert run(capsys, "ca", "issue", str(ca_dir), "spiffe://cli.test/w", "--ttl", "0s", "--out", str(tmp_path / "x"))[0] == 2
    assert run(capsys, "ca", "issue", str(tmp_path / "nope"), "spiffe://cli.test/w")[0] == 2
    assert run(capsys, "ca", "issue", str(ca_dir), "spiffe://cli.test/w", "--out", str(tmp_path / "no" / "dir" / "x"))[0] == 2


def test_ca_bundle(ca_dir, capsys) -> None:
    code, out, _ = run(capsys, "ca", "bundle", str(ca_dir))
    assert code == 0 and out.startswith("-----BEGIN CERTIFICATE-----")
    code, out, _ = run(capsys, "ca", "bundle", str(ca_dir), "--format", "jwks")
    assert code == 0 and {k["use"] for k in json.loads(out)["keys"]} == {"x509-svid", "jwt-svid"}
    code, obj = run_json(capsys, "ca", "bundle", str(ca_dir), "--format", "jwks")
    assert code == 0 and obj["format"] == "jwks" and json.loads(obj["bundle"])["keys"]


def test_svid_verify_invalid_and_unreadable(tmp_path, capsys) -> None:
    a, b = TestCA.create("a.test"), TestCA.create("b.test")
    (tmp_path / "a.pem").write_bytes(a.bundle().to_pem())
    (tmp_path / "b.json").write_bytes(b.bundle().to_jwks())
    (tmp_path / "cross.pem").write_bytes(a.foreign("spiffe://b.test/impostor").chain_pem())
    (tmp_path / "ca-leaf.pem").write_bytes(a.ca_leaf().chain_pem())
    (tmp_path / "junk.pem").write_bytes(b"junk")
    bundles = ["--bundle", str(tmp_path / "a.pem"), "--bundle", str(tmp_path / "b.json")]

    code, obj = run_json(capsys, "svid", "verify", str(tmp_path / "cross.pem"), *bundles)
    assert code == 1 and obj["rule"] == "chain"
    code, out, _ = run(capsys, "svid", "verify", str(tmp_path / "ca-leaf.pem"), *bundles)
    assert code == 1 and "leaf-ca" in out
    assert run(capsys, "svid", "verify", str(tmp_path / "junk.pem"), *bundles)[0] == 2
    assert run(capsys, "svid", "verify", str(tmp_path / "missing.pem"), *bundles)[0] == 2
    assert run(capsys, "svid", "verify", str(tmp_path / "cross.pem"), "--bundle", str(tmp_path / "junk.pem"))[0] == 2
    assert run(capsys, "svid", "verify", str(tmp_path / "cross.pem"), *bundles, "--at", "yesterday")[0] == 2
    assert run(capsys, "svid", "verify", str(tmp_path / "cross.pem"), *bundles, "--at", "2026-01-01T00:00:00")[0] == 2
    assert run(capsys, "svid", "verify", str(tmp_path / "cross.pem"))[0] == 2  # --bundle is required
    code, obj = run_json(capsys, "svid", "verify", str(tmp_path / "junk.pem"), *bundles)
    assert code == 2 and obj["ok"] is False


def test_svid_verify_trust_domain_flag_for_json_without_x509(tmp_path, capsys) -> None:
    a = TestCA.create("a.test")
    (tmp_path / "empty.json").write_bytes(b'{"keys": []}')
    (tmp_path / "leaf.pem").write_bytes(a.issue("spiffe://a.test/w").chain_pem())
    assert run(capsys, "svid", "verify", str(tmp_path / "leaf.pem"), "--bundle", str(tmp_path / "empty.json"))[0] == 2
    code, obj = run_json(capsys, "svid", "verify", str(tmp_path / "leaf.pem"), "--bundle", str(tmp_path / "empty.json"), "--trust-domain", "a.test")
    assert code == 1 and obj["rule"] == "empty-bundle"


def test_subprocess_python_m_ztid(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def ztid(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ztid", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    assert ztid("ca", "init", "--trust-domain", "sub.test", "ca").returncode == 0
    assert ztid("ca", "issue", "ca", "spiffe://sub.test/w", "--out", "w").returncode == 0
    ok = ztid("svid", "verify", "w.pem", "--bundle", "ca/bundle.pem", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["spiffe_id"] == "spiffe://sub.test/w"
    bad = ztid("id", "check", "spiffe://sub.test/a//b")
    assert bad.returncode == 1 and "path-empty-segment" in bad.stdout


def test_svid_verify_reads_stdin(tmp_path, capsys, monkeypatch) -> None:
    import io

    a = TestCA.create("a.test")
    (tmp_path / "a.pem").write_bytes(a.bundle().to_pem())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(a.issue("spiffe://a.test/w").chain_pem())))
    code, obj = run_json(capsys, "svid", "verify", "-", "--bundle", str(tmp_path / "a.pem"))
    assert code == 0 and obj["spiffe_id"] == "spiffe://a.test/w"
