"""``ztid sidecar`` as a real process: SIGTERM drains in-flight checks, SIGHUP reloads, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ztid.audit.log_verify import verify_log
from ztid.bundle import BundleSet

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"
WRITE_REGISTRY = {"ztid.target": "registry", "ztid.action": "write"}


def ztid(*argv: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ztid", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def wait_serving(target: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise AssertionError("sidecar did not become SERVING")


def test_sigterm_drains_in_flight_checks(trust: Any, policy_file: Path, sock: str, tmp_path: Path,
                                         make_request: Callable[..., ea.CheckRequest]) -> None:
    log = tmp_path / "d.log"
    proc = ztid("sidecar", "--policy", str(policy_file), "--bundle", str(trust.bundle), "--svid", str(trust.cert),
                "--svid-key", str(trust.key), "--listen", sock, "--decision-log", str(log), "--json")
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["ok"] is True and ready["listen"] == [sock]
        wait_serving(sock, proc)
        with grpc.insecure_channel(sock) as ch:
            stub = ea_grpc.AuthorizationStub(ch)
            req = make_request(principal=TRAINING, context_extensions=WRITE_REGISTRY)
            assert stub.Check(req, timeout=5).status.code == code_pb2.OK
            futures = [stub.Check.future(req, timeout=10) for _ in range(400)]
            proc.send_signal(signal.SIGTERM)
            answered = refused = 0
            for f in futures:
                try:
                    resp = f.result()
                except grpc.RpcError as exc:
                    # sent after the drain began: refused as a transport error, which Envoy fails closed on
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
                    refused += 1
                else:
                    assert resp.status.code == code_pb2.OK
                    answered += 1
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answered + refused == 400 and answered >= 1
    r = verify_log(log, BundleSet.load(str(trust.bundle)))
    assert r.ok, r.detail
    assert r.decisions == answered + 1  # every answer was logged, nothing logged went unanswered
    assert r.unsigned_tail == 0  # closed with a signed checkpoint
    assert not os.path.exists(sock[len("unix:"):])


def test_sighup_reloads_the_policy(trust: Any, policy_file: Path, sock: str, tmp_path: Path,
                                   make_request: Callable[..., ea.CheckRequest]) -> None:
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(f"listen: [{sock}]\npolicy: {policy_file}\ntrust: {{bundles: [{trust.bundle}]}}\n"
                   "reload_interval: 3600\n")  # no polling within the test: only SIGHUP can reload
    proc = ztid("sidecar", "--config", str(cfg))
    try:
        proc.stdout.readline()
        wait_serving(sock, proc)
        req = make_request(principal=f"spiffe://{TD}/inference/web", context_extensions=WRITE_REGISTRY)
        with grpc.insecure_channel(sock) as ch:
            stub = ea_grpc.AuthorizationStub(ch)
            assert stub.Check(req, timeout=5).status.code == code_pb2.PERMISSION_DENIED
            policy_file.write_text(policy_file.read_text().replace("\nmode: enforce", "\nmode: audit"))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while stub.Check(req, timeout=5).status.code != code_pb2.OK:
                assert time.monotonic() < deadline, "SIGHUP did not reload"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_cli(*argv: str) -> tuple[int, str, str]:
    from ztid.cli import main

    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_check_config(trust: Any, policy_file: Path, sock: str) -> None:
    code, out, _ = run_cli("sidecar", "--policy", str(policy_file), "--bundle", str(trust.bundle), "--listen", sock,
                           "--check-config", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["ok"] is True and obj["listen"] == [sock] and len(obj["policy_digest"]) == 64


@pytest.mark.parametrize("argv, needle", [
    ((), "--policy"),
    (("--listen", "nowhere"), "listen address"),
    (("--config", "/nonexistent/sidecar.yaml"), "cannot read"),
])
def test_bad_invocations_exit_2(trust: Any, policy_file: Path, argv: tuple[str, ...], needle: str) -> None:
    base = ("--policy", str(policy_file), "--bundle", str(trust.bundle)) if argv and argv[0] == "--listen" else ()
    code, _, err = run_cli("sidecar", *base, *argv, "--check-config")
    assert code == 2 and needle in err


def test_broken_policy_at_start_exits_2(trust: Any, policy_file: Path) -> None:
    policy_file.write_text(policy_file.read_text().replace("actions: [read, write]", "actions: [read, write"))
    code, _, err = run_cli("sidecar", "--policy", str(policy_file), "--bundle", str(trust.bundle), "--check-config")
    assert code == 2 and "policy" in err
