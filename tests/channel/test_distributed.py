"""Multi-process torch.distributed (gloo) on loopback: encrypted collectives equal the plaintext ones;
refused peers (an inference SVID, a foreign trust domain) make every rank fail at the handshake."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from channel_helpers import FOREIGN, ROOT, TD, Pki

WORKER = Path(__file__).resolve().parent / "dist_worker.py"

pytestmark = [pytest.mark.timeout(120), pytest.mark.torch]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp: Path, pki: Pki, scenario: str, ids: list[str], *, foreign_ranks: tuple[int, ...] = ()) -> list[dict]:
    """Mint one SVID per rank into ``tmp``, start the ranks as subprocesses, return their results."""
    (tmp / "bundle.pem").write_bytes(pki.ca.bundle().to_pem())
    (tmp / "policy.yaml").write_bytes((ROOT / "policy.yaml").read_bytes())
    for rank, sid in enumerate(ids):
        svid = (pki.partner if rank in foreign_ranks else pki.ca).issue(sid)
        (tmp / f"rank{rank}.pem").write_bytes(svid.chain_pem())
        key = tmp / f"rank{rank}.key"
        key.write_bytes(svid.key_pem())
        os.chmod(key, 0o600)
        rotated = (pki.partner if rank in foreign_ranks else pki.ca).issue(sid)  # what the source delivers next
        (tmp / f"rank{rank}.rotated.pem").write_bytes(rotated.chain_pem())
        (tmp / f"rank{rank}.rotated.key").write_bytes(rotated.key_pem())
    for rank in foreign_ranks:  # the foreign rank trusts both domains; ours trust only their own
        (tmp / f"bundle_rank{rank}.pem").write_bytes(pki.partner.bundle().to_pem())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), scenario, str(r), str(len(ids)), str(port), str(tmp)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for r in range(len(ids))
    ]
    logs = []
    for p in procs:
        out, _ = p.communicate(timeout=100)
        logs.append(out.decode(errors="replace"))
    results = []
    for r in range(len(ids)):
        path = tmp / f"result{r}.json"
        assert path.exists(), f"rank {r} wrote no result:\n{logs[r][-3000:]}"
        results.append(json.loads(path.read_text()))
    return results


def test_three_ranks_encrypted_collectives_match_gloo(tmp_path: Path, pki: Pki) -> None:
    ids = [f"spiffe://{TD}/ns/vision/sa/training", f"spiffe://{TD}/ns/vision/sa/training", f"spiffe://{TD}/ns/vision/sa/training"]
    results = run_ranks(tmp_path, pki, "collectives", ids)
    for res in results:
        assert res["init"] == "ok", res
        assert len(res["peers"]) == 2
        assert res["broadcast"] is True
        assert res["all_gather"] is True
        assert res["all_reduce_max_exact"] is True
        assert res["all_reduce_max_abs_err"] < 1e-4
        assert res["reduce_identical_on_all_ranks"] is True
        assert res["all_reduce_noncontiguous"] is True
        assert res["after_rekey_close"] is True
        assert res["send_epochs_advanced"] is True
        assert res["recv_epoch_advanced"] is True
        assert res["subgroup"] is True
        assert res["after_rehandshake_close"] is True
        assert res["new_keys"] is True
        assert res["old_group_closed"] is True
    assert all(res["p2p"] is True for res in results[1:])


def test_inference_rank_is_refused_at_the_handshake(tmp_path: Path, pki: Pki) -> None:
    ids = [f"spiffe://{TD}/ns/vision/sa/training", f"spiffe://{TD}/ns/vision/sa/inference"]
    training, inference = run_ranks(tmp_path, pki, "handshake", ids)
    # the inference rank's own check refuses the training peer (policy: inference denies training)
    assert inference["init"] == "PermissionDenied", inference
    # and the training rank refuses the inference client, so the whole group fails, naming the refusal
    assert training["init"] == "TransportError", training
    assert "inference is explicitly denied access to training" in training["error"], training


def test_foreign_trust_domain_rank_is_refused(tmp_path: Path, pki: Pki) -> None:
    ids = [f"spiffe://{TD}/ns/vision/sa/training", f"spiffe://{FOREIGN}/ns/vision/sa/training"]
    ours, foreign = run_ranks(tmp_path, pki, "handshake", ids, foreign_ranks=(1,))
    # ours has no bundle for partner.example: the client's chain does not verify (no pooled anchors)
    assert ours["init"] == "TransportError" and "rank 0 refused a peer: TLS handshake failed" in ours["error"], ours
    # the foreign rank verifies us, but its own policy neither owns nor federates partner.example
    assert foreign["init"] == "PermissionDenied" and "neither owns nor federates" in foreign["error"], foreign
    assert "peers" not in ours and "peers" not in foreign
