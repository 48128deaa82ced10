"""``workers: N``: processes sharing a TCP port (SO_REUSEPORT), one decision log each, drained together."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ztid.audit.log_verify import verify_log
from ztid.bundle import BundleSet
from ztid.sidecar.config import SidecarConfig
from ztid.sidecar.workers import worker_config

TD = "ai-platform.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_config_splits_what_cannot_be_shared() -> None:
    cfg = SidecarConfig(policy="p", bundles=("b",), listen=("unix:/run/a.sock", "127.0.0.1:9191"),
                        decision_log="/var/log/d.log", metrics="0.0.0.0:9102", workers=3)
    assert worker_config(cfg, 0) == cfg
    w2 = worker_config(cfg, 2)
    assert w2.listen == ("unix:/run/a.sock.2", "127.0.0.1:9191")
    assert (w2.decision_log, w2.metrics) == ("/var/log/d.log.2", "0.0.0.0:9104")


def test_two_workers_share_a_port_and_drain_together(
    trust: Any, policy_file: Path, tmp_path: Path, make_request: Callable[..., ea.CheckRequest]
) -> None:
    port = free_port()
    log = tmp_path / "d.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztid", "sidecar", "--policy", str(policy_file), "--bundle", str(trust.bundle),
         "--svid", str(trust.cert), "--svid-key", str(trust.key), "--listen", f"127.0.0.1:{port}",
         "--decision-log", str(log), "--workers", "2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert json.loads(proc.stdout.readline())["workers"] == 2
        target = f"127.0.0.1:{port}"
        req = make_request(principal=f"spiffe://{TD}/training/x", context_extensions={"ztid.target": "registry"})
        deadline = time.monotonic() + 30
        while not (log.exists() and Path(f"{log}.1").exists()):  # both workers loaded (each opens its log)
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        answered = 0
        while answered < 40:
            assert time.monotonic() < deadline, "no answers"
            # a new connection each time: the kernel spreads connections over the two listening sockets
            with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                if health.status != health_pb2.HealthCheckResponse.SERVING:  # its log opens just before SERVING
                    time.sleep(0.02)
                    continue
                assert ea_grpc.AuthorizationStub(ch).Check(req, timeout=5).status.code == code_pb2.OK
                answered += 1
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        assert code == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bundles = BundleSet.load(str(trust.bundle))
    results = [verify_log(path, bundles) for path in (log, Path(f"{log}.1"))]
    assert all(r.ok and r.unsigned_tail == 0 for r in results), [(r.lines, r.decisions, r.unsigned_tail) for r in results]
    assert sum(r.decisions for r in results) == answered
    assert all(r.decisions > 0 for r in results)  # both workers answered
