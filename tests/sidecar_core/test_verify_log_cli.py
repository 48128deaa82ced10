"""``ztid audit verify-log``: 0 clean, 1 tampered (names the first bad line), 2 unreadable; --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ztid.audit.decisions import DecisionLog
from ztid.cli import main
from ztid.testing import TestCA

TD = "ai-platform.example"


@pytest.fixture
def files(tmp_path: Path, ca: TestCA, policy: Any, signer: Any) -> tuple[Path, Path]:
    log_path = tmp_path / "decisions.log"
    with DecisionLog(log_path, signer=signer, checkpoint_every=4) as log:
        for src in ("training/a", "inference/b") * 5:
            log.record(policy.decide(f"spiffe://{TD}/{src}", "registry", "write"))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle().to_pem())
    return log_path, bundle


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", "verify-log", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clean(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, bundle = files
    code, out, _ = run(capsys, str(log), "--bundle", str(bundle), "--signer", f"spiffe://{TD}/ztid/sidecar")
    assert code == 0 and out.startswith("clean:") and "10 decisions" in out


def test_clean_json(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, bundle = files
    code, out, _ = run(capsys, str(log), "--bundle", str(bundle), "--json")
    obj = json.loads(out)
    assert code == 0 and obj["ok"] is True and obj["tampered"] is False and obj["decisions"] == 10
    assert obj["first_bad_line"] is None and obj["signers"] == [f"spiffe://{TD}/ztid/sidecar"]


def test_tampered_names_the_line(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, bundle = files
    lines = log.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"allowed":true', b'"allowed":false')
    assert b'"allowed":false' in lines[3]
    log.write_bytes(b"".join(lines))
    code, out, _ = run(capsys, str(log), "--bundle", str(bundle))
    assert code == 1 and "line 4: edit" in out
    code, out, _ = run(capsys, str(log), "--bundle", str(bundle), "--json")
    obj = json.loads(out)
    assert code == 1 and (obj["ok"], obj["first_bad_line"], obj["kind"]) == (False, 4, "edit")


def test_wrong_signer_is_tampered(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, bundle = files
    code, out, _ = run(capsys, str(log), "--bundle", str(bundle), "--signer", f"spiffe://{TD}/other")
    assert code == 1 and "unknown_signer" in out


def test_foreign_bundle_only(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             partner: TestCA) -> None:
    log, _ = files
    other = tmp_path / "partner.pem"
    other.write_bytes(partner.bundle().to_pem())
    code, out, _ = run(capsys, str(log), "--bundle", str(other))
    assert code == 1 and "unknown_signer" in out


@pytest.mark.parametrize("what", ["log", "bundle", "checkpoint"])
def test_unreadable_input_is_exit_2(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    what: str) -> None:
    log, bundle = files
    argv = [str(log), "--bundle", str(bundle), "--json"]
    missing = str(tmp_path / "missing")
    if what == "log":
        argv[0] = missing
    elif what == "bundle":
        argv[2] = missing
    else:
        argv += ["--checkpoint", missing]
    code, out, _ = run(capsys, *argv)
    assert code == 2 and json.loads(out)["ok"] is False


def test_bad_signer_argument_is_usage(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, bundle = files
    code, _, err = run(capsys, str(log), "--bundle", str(bundle), "--signer", "not-an-id")
    assert code == 2 and "not-an-id" in err
