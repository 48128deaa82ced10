"""``ztid agent`` as a real subprocess: ready line, serving, SIGHUP reload, SIGTERM; usage errors in-process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest
from spiffe import WorkloadApiClient

from ztid.cli import main
from ztid.errors import SourceError
from ztid.source_workload import WorkloadApiSource


@pytest.fixture
def run_agent(short_dir):
    procs: list[subprocess.Popen] = []

    def run(*args: str) -> tuple[subprocess.Popen, dict]:
        p = subprocess.Popen([sys.executable, "-m", "ztid", "agent", "--json", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        p.log = []  # type: ignore[attr-defined]  # stderr lines, collected as they come
        threading.Thread(target=lambda: p.log.extend(iter(p.stderr.readline, "")), daemon=True).start()  # type: ignore[attr-defined]
        line = p.stdout.readline()
        assert line, "agent did not start"
        return p, json.loads(line)

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_agent_serves_the_spiffe_client_and_stops_on_sigterm(run_agent, ca_dir, short_dir) -> None:
    sock = short_dir / "cli.sock"
    proc, ready = run_agent("--dir", str(ca_dir), "--socket", str(sock), "--id", "spiffe://dev.local/training", "--ttl", "10m")
    assert ready == {"ok": True, "endpoint": f"unix://{sock}", "trust_domain": "dev.local", "pid": proc.pid}
    with WorkloadApiClient(ready["endpoint"], default_timeout=5) as client:
        svid = client.fetch_x509_svid()
    assert str(svid.spiffe_id) == "spiffe://dev.local/training"
    lifetime = svid.leaf.not_valid_after_utc - svid.leaf.not_valid_before_utc
    assert 9 * 60 <= lifetime.total_seconds() <= 12 * 60
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not sock.exists()


def test_sighup_reloads_selectors_and_revocation_fails_the_source_closed(run_agent, ca_dir, short_dir, entries_yaml, my_uid, wait) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid})))
    proc, ready = run_agent("--dir", str(ca_dir), "--socket", str(short_dir / "hup.sock"), "--selectors", str(sel))
    src = WorkloadApiSource(ready["endpoint"], timeout=5)
    try:
        assert str(src.snapshot().svid.spiffe_id) == "spiffe://dev.local/training"
        sel.write_text("entries: [\n")  # a broken file: the agent keeps serving the previous entries
        proc.send_signal(signal.SIGHUP)
        wait(lambda: any("reload failed" in line for line in proc.log), what="the failed reload to be logged")
        assert str(src.snapshot().svid.spiffe_id) == "spiffe://dev.local/training"
        sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid + 1})))
        proc.send_signal(signal.SIGHUP)

        def denied() -> bool:
            try:
                src.snapshot()
            except SourceError:
                return True
            return False

        wait(denied, what="the source to fail closed after SIGHUP revoked the caller")
    finally:
        src.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--socket", "s.sock", "--id", "spiffe://dev.local/x"],  # no --dir
        ["--dir", "CA", "--socket", "s.sock"],  # neither --id nor --selectors
        ["--dir", "CA", "--socket", "s.sock", "--id", "spiffe://dev.local/x", "--selectors", "f.yaml"],
        ["--dir", "CA", "--socket", "s.sock", "--id", "spiffe://dev.local/x", "--ttl", "soon"],
        ["--dir", "CA", "--socket", "s.sock", "--id", "spiffe://other.example/x"],  # not the CA's trust domain
        ["--dir", "CA", "--socket", "s.sock", "--id", "not-an-id"],
        ["--dir", "CA", "--socket", "s.sock", "--selectors", "missing.yaml"],
        ["--dir", "/nonexistent", "--socket", "s.sock", "--id", "spiffe://dev.local/x"],
    ],
)
def test_usage_errors_exit_2(argv, ca_dir, short_dir, capsys) -> None:
    argv = [str(ca_dir) if a == "CA" else str(short_dir / a) if a.endswith((".sock", ".yaml")) else a for a in argv]
    assert main(["agent", *argv]) == 2
    assert capsys.readouterr().err
