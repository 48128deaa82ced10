"""The sidecar with its SVID and bundles from the SPIFFE Workload API (ztid's dev agent on a unix socket)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.rpc import code_pb2

from ztid.agent import DevAgent
from ztid.audit.log_verify import verify_log
from ztid.devca import DevCA
from ztid.sidecar.config import SidecarConfig

TD = "ai-platform.example"
SIDECAR_ID = f"spiffe://{TD}/ztid/sidecar"


def test_svid_and_bundles_from_the_workload_api(
    policy_file: Path, sock: str, tmp_path: Path, run_sidecar: Callable[..., Any],
    make_request: Callable[..., ea.CheckRequest], stub_for: Callable[..., Any],
) -> None:
    short = Path(tempfile.mkdtemp(prefix="ztwl"))
    try:
        ca = DevCA.create(TD)
        ca.save(short / "ca")
        with DevAgent(short / "ca", short / "agent.sock", spiffe_id=SIDECAR_ID) as agent:
            cfg = SidecarConfig(policy=str(policy_file), listen=(sock,), workload_api=agent.endpoint,
                                decision_log=str(tmp_path / "d.log"))
            with run_sidecar(cfg) as run:
                stub = stub_for(sock)
                ok = make_request(principal=f"spiffe://{TD}/training/x", context_extensions={"ztid.target": "registry"},
                                  certificate=ca.issue(f"spiffe://{TD}/training/x").chain_pem(), method="POST")
                assert stub.Check(ok, timeout=5).status.code == code_pb2.OK  # certificate verified with API bundles
                assert run.sidecar.metrics.svid_expiry._value.get() > 0
        r = verify_log(tmp_path / "d.log", ca.bundle(), expect_signer=SIDECAR_ID)
        assert r.ok and r.checkpoints == 1 and r.decisions == 1
    finally:
        shutil.rmtree(short, ignore_errors=True)
