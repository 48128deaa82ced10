"""Demo chapter 3: the Envoy ext_authz sidecar answers Envoy-shaped checks; metrics; the decision log verified."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ztid.audit.log_verify import verify_log
from ztid.bundle import BundleSet
from ztid.demo._envoy import check_request, xfcc_for

TD = "ai-platform.example"
PROXY = f"spiffe://{TD}/envoy/edge"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(target) as ch:
                status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise RuntimeError("sidecar did not become SERVING")


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Run `ztid sidecar` as a real process and put the demo's story to it."""
    ca, partner = story.notes["ca"], story.notes["partner"]
    d: Path = story.workdir / "mesh"
    d.mkdir(exist_ok=True)
    sidecar_svid = ca.issue(f"spiffe://{TD}/ztid/sidecar")
    (d / "sidecar.pem").write_bytes(sidecar_svid.chain_pem())
    (d / "sidecar.key").write_bytes(sidecar_svid.key_pem())
    os.chmod(d / "sidecar.key", 0o600)
    (d / "bundle.pem").write_bytes(ca.bundle().to_pem())
    sock = f"unix:{d / 'authz.sock'}"
    if len(sock) > 100:  # unix socket paths are short; fall back to a short private dir
        import tempfile

        sock = f"unix:{tempfile.mkdtemp(prefix='ztd')}/authz.sock"
    port = _free_port()
    log = d / "decisions.log"
    cfg = {
        "listen": [sock], "policy": str(story.policy_path.resolve()),
        "trust": {"bundles": [str(d / "bundle.pem")], "svid": {"cert": str(d / "sidecar.pem"), "key": str(d / "sidecar.key")}},
        "decision_log": {"path": str(log), "checkpoint_every": 4},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "extauthz": {"trust_xfcc": True, "proxy_id": PROXY},
    }
    (d / "sidecar.yaml").write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    story.title("3. The same policy at the mesh: Envoy ext_authz sidecar")
    story.say(f"$ ztid sidecar --config {d / 'sidecar.yaml'}   (unix socket, decision log, metrics on :{port})")
    proc = subprocess.Popen([sys.executable, "-m", "ztid", "sidecar", "--config", str(d / "sidecar.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ok = True
    try:
        _wait_serving(sock, proc)
        training = ca.issue(f"spiffe://{TD}/training/job-7")
        inference = ca.issue(f"spiffe://{TD}/inference/web")
        proxy = ca.issue(PROXY)
        foreign = partner.issue("spiffe://partner.example/training/eval")
        cases = [
            ("training writes a checkpoint", check_request(principal=str(training.spiffe_id), certificate=training.chain_pem(),
                                                           method="POST", target="registry"), True),
            ("inference reads the model", check_request(principal=str(inference.spiffe_id), certificate=inference.chain_pem(),
                                                        target="registry"), True),
            ("inference tries to write", check_request(principal=str(inference.spiffe_id), certificate=inference.chain_pem(),
                                                       method="PUT", target="registry"), False),
            ("XFCC spoofed (By is not the proxy)", check_request(
                principal=PROXY, certificate=proxy.chain_pem(), method="POST", target="registry",
                headers={"x-forwarded-client-cert": xfcc_for(training, by=f"spiffe://{TD}/evil", uri=str(training.spiffe_id))}),
             False),
            ("partner.example workload", check_request(principal=str(foreign.spiffe_id), certificate=foreign.chain_pem(),
                                                       target="registry"), False),
        ]
        rows = []
        with grpc.insecure_channel(sock) as ch:
            stub = ea_grpc.AuthorizationStub(ch)
            for label, req, expect in cases:
                resp = stub.Check(req, timeout=5)
                allowed = resp.status.code == code_pb2.OK
                ok &= allowed == expect
                if allowed:
                    hdrs = {h.header.key: h.header.value for h in resp.ok_response.headers}
                    detail = f"x-ztid-component={hdrs.get('x-ztid-component')}"
                else:
                    detail = json.loads(resp.denied_response.body)["reason"]
                rows.append((label, "OK" if allowed else f"DENIED ({resp.denied_response.status.code})", detail))
        story.table(["request through Envoy", "answer", "detail"], rows)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        story.say("\n/metrics (no SPIFFE IDs as labels):")
        for line in metrics.splitlines():
            if line.startswith(("ztid_authz_decisions_total{", "ztid_policy_info{")):
                story.say("  " + line)
    finally:
        proc.send_signal(signal.SIGTERM)  # drains in-flight checks and signs a last checkpoint
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            ok = False
    bundles = BundleSet([ca.bundle()])
    result = verify_log(log, bundles)
    story.say(f"\n$ ztid audit verify-log {log.name} --bundle bundle.pem  ->  "
              f"{'clean' if result.ok else 'TAMPERED'}: {result.decisions} decisions, signed checkpoints")
    ok &= result.ok
    tampered = d / "decisions-edited.log"
    lines = log.read_text().splitlines(keepends=True)
    idx = next(i for i, line in enumerate(lines) if '"allowed":false' in line.replace(" ", ""))
    lines[idx] = lines[idx].replace('"allowed":false', '"allowed":true')
    tampered.write_text("".join(lines))
    bad = verify_log(tampered, bundles)
    story.say(f"someone flips a deny to an allow in a copy  ->  {'clean (bug!)' if bad.ok else 'detected'}: line {bad.first_bad_line}, {bad.kind}: {bad.detail}")
    ok &= not bad.ok
    return ok
