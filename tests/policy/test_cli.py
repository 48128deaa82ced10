"""``ztid policy``: lint/decide/explain/show in-process through ztid.cli.main, and once as a subprocess."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ztid.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"
JOB = "spiffe://ai-platform.example/training/job-7"
BROKEN = SHIPPED.read_text().replace("data-store: [read]   ", "data-store: [wrtie]  ")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    return path


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_lint_ok(capsys) -> None:
    code, out, err = run(capsys, "policy", "lint", str(SHIPPED))
    assert code == 0 and err == ""
    assert out.startswith(f"{SHIPPED}: ok (8 components, 19 rules, mode enforce, tenancy isolated, sha256 ")
    code, out, _ = run(capsys, "policy", "lint", "--json", str(SHIPPED))
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["components"] == 8 and len(data["digest"]) == 64


def test_lint_broken_is_located(capsys, broken: Path) -> None:
    where = f"{broken}:{_line(BROKEN, 'wrtie')}: components.training.allow.data-store"
    code, out, err = run(capsys, "policy", "lint", str(broken))
    assert code == 2 and out == ""
    assert err == f"ztid: broken policy: {where}: unknown action 'wrtie'; known actions: read, write\n"
    code, out, err = run(capsys, "policy", "lint", "--json", str(broken))
    data = json.loads(out)
    assert code == 2 and err == ""
    assert data == {"ok": False, "error": "policy", "location": where,
                    "detail": "unknown action 'wrtie'; known actions: read, write",
                    "message": f"{where}: unknown action 'wrtie'; known actions: read, write"}


def test_lint_missing_file(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "policy", "lint", str(tmp_path / "none.yaml"))
    assert code == 2 and "cannot read policy file" in err


@pytest.mark.parametrize(("source", "target", "action", "extra", "code", "verdict"), [
    (JOB, "data-store", "read", [], 0, "allowed (allowed): training may read data-store"),
    (JOB, "data-store", "write", [], 1, "denied (no_matching_rule): no rule allows training to write data-store"),
    (JOB, "inference", "read", [], 1, "denied (explicit_deny): training is explicitly denied access to inference"),
    ("spiffe://ai-platform.example/ns/team-a/sa/training", "training", "write", ["--target-tenant", "team-b"], 1,
     "denied (tenant_mismatch): tenancy is isolated: source tenant 'team-a' may not reach target tenant 'team-b'"),
    ("spiffe://ai-platform.example/ns/team-a/sa/training", "spiffe://ai-platform.example/ns/team-a/sa/training",
     "write", [], 0, "allowed (allowed): training may write training"),
    ("garbage", "data-store", "read", [], 1, "denied (malformed_identity): "),
])
def test_decide(capsys, source, target, action, extra, code, verdict) -> None:
    args = ["policy", "decide", "--policy", str(SHIPPED), "--source", source, "--target", target, "--action", action, *extra]
    rc, out, _ = run(capsys, *args)
    assert rc == code
    assert out.startswith(verdict)
    rc, out, _ = run(capsys, *args, "--json")
    data = json.loads(out)
    assert rc == code and data["allowed"] is (code == 0) and data["ok"] is True
    assert data["policy_digest"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


def test_decide_with_broken_policy(capsys, broken: Path) -> None:
    rc, out, err = run(capsys, "policy", "decide", "--policy", str(broken), "--source", JOB, "--target", "data-store",
                       "--action", "read", "--json")
    assert rc == 2 and json.loads(out)["error"] == "policy"


def test_explain(capsys) -> None:
    rc, out, _ = run(capsys, "policy", "explain", "--policy", str(SHIPPED), "--source", JOB, "--target", "inference",
                     "--action", "read")
    assert rc == 1
    assert "identity template #2 'spiffe://ai-platform.example/{component}/{workload...}' matched: " \
           "component='training', workload='job-7'" in out
    assert f"rule components.training.deny.inference (line {_line(SHIPPED.read_text(), 'deny: [inference, monitoring-admin]')}) " \
           "decided: deny" in out
    rc, out, _ = run(capsys, "policy", "explain", "--policy", str(SHIPPED), "--source", JOB, "--target", "data-store",
                     "--action", "read", "--json")
    data = json.loads(out)
    assert rc == 0 and data["captures"] == {"component": "training", "workload": "job-7"}
    assert data["rule"] == "components.training.allow.data-store"


def test_show(capsys) -> None:
    rc, out, _ = run(capsys, "policy", "show", str(SHIPPED))
    assert rc == 0 and "training           -> inference            DENY" in out
    rc, out, _ = run(capsys, "policy", "show", "--json", str(SHIPPED))
    data = json.loads(out)
    assert data["components"]["pipeline"] == {
        "allow": {"training": ["read", "write"], "registry": ["read", "write"], "data-store": ["read", "write"],
                  "feature-store": ["read", "write"]},
        "deny": ["inference"],
    }


def test_usage_errors_exit_2(capsys) -> None:
    rc, _, err = run(capsys, "policy", "decide", "--policy", str(SHIPPED))
    assert rc == 2 and "required" in err


def test_subprocess(broken: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "ztid", "policy", "decide", "--policy", str(SHIPPED), "--source", JOB,
                         "--target", "data-store", "--action", "read", "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["code"] == "allowed"
    bad = subprocess.run([sys.executable, "-m", "ztid", "policy", "lint", str(broken)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unknown action 'wrtie'" in bad.stderr
