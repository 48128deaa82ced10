"""``ztid keyd`` as a real subprocess on a unix socket; ``ztid seal-dataset`` and ``rewrap-dataset`` against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from keyd_helpers import KEYD_NAME, PIPELINE, ROOT, TD, TRAINING, cli

from ztid.crypto.keys import Keyring
from ztid.devca import DevCA

HERE = Path(__file__).resolve().parent


def _files(ca: DevCA, d: Path, name: str, spiffe_id: str, **kw) -> list[str]:
    svid = ca.issue(spiffe_id, **kw)
    (d / f"{name}.pem").write_bytes(svid.chain_pem())
    (d / f"{name}.key").write_bytes(svid.key_pem())
    os.chmod(d / f"{name}.key", 0o600)
    return ["--cert", str(d / f"{name}.pem"), "--key", str(d / f"{name}.key"), "--bundle", str(d / "ca" / "bundle.pem")]


@pytest.fixture
def running(tmp_path, plain_dir):
    with tempfile.TemporaryDirectory(prefix="ztk-", dir="/tmp") as short:
        ca = DevCA.create(TD)
        ca.save(tmp_path / "ca")
        Keyring.create(tmp_path / "keyring.json")
        sock = f"unix:{short}/keyd.sock"
        server_args = ["keyd", "--listen", sock, "--policy", str(ROOT / "policy.yaml"), "--keyring", str(tmp_path / "keyring.json"),
                       "--log", str(tmp_path / "decisions.log"), "--max-lease", "5m", "--json",
                       *_files(ca, tmp_path, "keyd", f"spiffe://{TD}/keyd/main", dns_names=[KEYD_NAME])]
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); from keyd_helpers import cli; sys.exit(cli(sys.argv[1:]))"
        proc = subprocess.Popen([sys.executable, "-c", code, *server_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert first, proc.stderr.read()
            summary = json.loads(first)
            client = ["--keyd", sock, "--server-name", KEYD_NAME]
            yield {"summary": summary, "tmp": tmp_path, "ca": ca, "proc": proc,
                   "pipeline": client + _files(ca, tmp_path, "pipeline", PIPELINE),
                   "training": client + _files(ca, tmp_path, "training", TRAINING)}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


def test_keyd_serves_seal_dataset_and_refuses_training_writes(running, plain_dir, capsys):
    tmp = running["tmp"]
    assert running["summary"]["ok"] and running["summary"]["spiffe_id"] == f"spiffe://{TD}/keyd/main"
    out = tmp / "sealed"
    assert cli(["seal-dataset", str(plain_dir), "--dataset", "imagenet", "--target", "data-store", "--out", str(out),
                "--json", *running["pipeline"]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["files"] == 3 and result["key_version"] == 1
    assert sorted(p.name for p in out.rglob("*.ztid")) == ["train-000.bin.ztid", "train-001.bin.ztid", "val-000.bin.ztid"]

    assert cli(["seal-dataset", str(plain_dir), "--dataset", "other", "--out", str(tmp / "x"), "--json", *running["training"]]) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["error"] == "refused" and "no_matching_rule" in refused["message"]

    Keyring.load(tmp / "keyring.json").rotate("default")
    assert cli(["rewrap-dataset", str(out), "--json", *running["pipeline"]]) == 0
    assert json.loads(capsys.readouterr().out)["key_versions"] == [2]

    proc = running["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    lines = [json.loads(x) for x in (tmp / "decisions.log").read_text().splitlines()]
    methods = [(x["extra"]["method"], x["allowed"]) for x in lines if x.get("kind") == "decision"]
    assert methods == [("NewKey", True), ("NewKey", False), ("RewrapKey", True)]
    registry = json.loads((tmp / "datasets.json").read_text())
    assert registry["datasets"]["imagenet"]["target"] == "data-store"


def test_usage_errors_exit_2(tmp_path):
    assert cli(["seal-dataset", str(tmp_path), "--dataset", "d", "--keyd", "127.0.0.1:1"]) == 2  # no SVID given
    assert cli(["keyd", "--policy", "nope.yaml", "--keyring", "k", "--log", "l", "--workload-api", "unix:/nope"]) == 2
    assert cli(["keyd", "--policy", str(ROOT / "policy.yaml"), "--keyring", "k", "--log", "l", "--max-lease", "soon"]) == 2


def test_progress_bar_only_on_a_terminal():
    import io

    from ztid.cli.keyd_cmd import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = _Progress(stream)
        bar(50, 100, "a.bin")
        bar(100, 100, "b.bin")
    assert pipe.getvalue() == ""
    assert "50.0%" in tty.getvalue() and "100.0%" in tty.getvalue() and tty.getvalue().endswith("\n")
