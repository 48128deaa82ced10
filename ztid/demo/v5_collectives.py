"""Demo chapter 5: training ranks all_reduce gradients over encrypted gloo; an inference rank is refused."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ztid.errors import SourceError

TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/ns/vision/sa/training"
INFERENCE = f"spiffe://{TD}/ns/vision/sa/inference"
STEPS = 4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world: int, port: int, source: Any, policy: Any, queue: Any) -> None:
    """One rank: join the gloo group, init_secure, then a few data-parallel SGD steps of a tiny model."""
    import torch
    import torch.distributed as dist

    from ztid import distributed as zd

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=dt.timedelta(seconds=30))
    out: dict[str, Any] = {"rank": rank, "id": str(source.snapshot().svid.spiffe_id)}
    try:
        sg = zd.init_secure(source=source, policy=policy, timeout=10.0)
        out["peers"] = {k: str(v) for k, v in sg.peers.items()}
    except Exception as exc:  # noqa: BLE001 - the rank always reports; the story shows what it raised
        out["refused"] = f"{type(exc).__name__}: {exc}"
        queue.put(out)
        dist.destroy_process_group()
        return
    torch.manual_seed(0)  # same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    w_true = torch.linspace(-1, 1, 16)
    steps = []
    for _ in range(STEPS):
        x = torch.randn(64, 16, generator=data)
        y = (x @ w_true).unsqueeze(1)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        plain = grads.clone()
        dist.all_reduce(plain)  # the unprotected reference, for the comparison only
        zd.all_reduce(grads)  # encrypted ring: decrypt, add, re-encrypt at each hop
        grads /= world
        off = 0
        for p in model.parameters():
            p.grad.copy_(grads[off : off + p.numel()].view_as(p))
            off += p.numel()
        opt.step()
        mean_loss = loss.detach().clone()
        zd.all_reduce(mean_loss)
        steps.append((float(mean_loss) / world, float((plain / world - grads).abs().max()), grads.numel() * 4))
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(params) for _ in range(world)]
    zd.all_gather(gathered, params)
    out["steps"] = steps
    out["same_weights"] = all(torch.equal(g, params) for g in gathered)
    queue.put(out)
    dist.destroy_process_group()


def _launch(sources: list[Any], policy: Any) -> list[dict[str, Any]]:
    ctx = mp.get_context("fork")  # the ranks inherit the imported torch and ztid instead of importing them again
    queue = ctx.Queue()
    port = _port()
    procs = [ctx.Process(target=_rank, args=(r, len(sources), port, src, policy, queue)) for r, src in enumerate(sources)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    return sorted(results, key=lambda r: r["rank"])


class _Agents:
    """Dev agents (``ztid agent`` processes), one per identity, as SPIRE agents would be per node."""

    def __init__(self, ca_dir: Path, workdir: Path) -> None:
        self._ca_dir, self._workdir, self._procs = ca_dir, workdir, []  # type: ignore[var-annotated]

    def start(self, *spiffe_ids: str) -> list[str]:
        sockets, procs = [], []
        for i, sid in enumerate(spiffe_ids):
            path = self._workdir / f"agent-{i}.sock"
            cmd = [sys.executable, "-m", "ztid", "agent", "--dir", str(self._ca_dir), "--socket", str(path), "--id", sid,
                   "--json", "--quiet"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            sockets.append(str(path))
        self._procs.extend(procs)
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""  # one JSON object once serving
            if not line or not json.loads(line).get("ok"):
                raise SourceError(f"ztid agent did not start: {proc.stderr.read() if proc.stderr else ''}")
        return sockets

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _fetch(socket_path: str) -> Any:
    """An SVID from the agent's Workload API, handed off as a static snapshot the forked ranks can use."""
    from ztid.source_workload import WorkloadApiSource

    src = WorkloadApiSource(socket_path)
    try:
        return src.fork_handoff()
    finally:
        src.close()


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Two training ranks train a tiny model with encrypted all_reduce; a rank with an inference SVID is refused."""
    story.title("5. Encrypted collectives: torch.distributed (gloo) between SVID-holding ranks")
    try:
        import torch  # noqa: F401
    except ImportError:
        story.say("torch is not installed (pip install 'ztid[torch]'): chapter skipped.")
        return True
    from ztid.devca import DevCA

    start = time.perf_counter()
    ca_dir = story.workdir / "ca-v5"
    DevCA.create(TD).save(ca_dir)
    agents = _Agents(ca_dir, story.workdir)
    try:
        training_sock, inference_sock = agents.start(TRAINING, INFERENCE)
        training = [_fetch(training_sock), _fetch(training_sock)]
        inference = _fetch(inference_sock)
    finally:
        agents.stop()
    story.say("gloo, NCCL and RDMA bypass the mesh and send tensors in the clear, unauthenticated. ztid keys every")
    story.say("pair of ranks with a handshake inside mTLS (SVIDs verified, policy asked both ways) and sends only")
    story.say("AES-256-GCM frames over gloo. SVIDs come from two dev agents (`ztid agent`, the Workload API):")
    story.say(f"  {training_sock} serves {TRAINING}; {inference_sock} serves {INFERENCE}")
    story.say("Two ranks, both training in tenant 'vision':")
    ok = True
    results = _launch(training, story.policy)
    for res in results:
        if "refused" in res:
            story.say(f"  rank {res['rank']}: REFUSED (bug!): {res['refused']}")
            return False
        story.say(f"  rank {res['rank']} {res['id']}: keyed with {', '.join(f'rank {k}' for k in res['peers'])}")
    rows = [(str(i + 1), f"{loss:.4f}", f"{nbytes} B", f"{err:.1e}") for i, (loss, err, nbytes) in enumerate(results[0]["steps"])]
    story.table(["step", "mean loss", "gradient all_reduce", "max |encrypted - plaintext|"], rows)
    same = all(r["same_weights"] for r in results)
    story.say(f"weights identical on both ranks after {STEPS} steps: {'yes' if same else 'NO (bug!)'}")
    ok &= same and all(err < 1e-5 for _, err, _ in results[0]["steps"])
    ok &= results[0]["steps"][-1][0] < results[0]["steps"][0][0]

    story.say("")
    story.say("Now rank 1 holds an inference SVID (the policy denies inference -> training and training -> inference):")
    refused = _launch([training[0], inference], story.policy)
    for res in refused:
        story.say(f"  rank {res['rank']} {res['id']}: {'refused: ' + _short(res['refused']) if 'refused' in res else 'KEYED (bug!)'}")
    ok &= all("refused" in r for r in refused)
    story.say(f"(chapter took {time.perf_counter() - start:.1f} s; no tensor left either rank before the handshake)")
    return ok


def _short(text: str) -> str:
    return text if len(text) < 150 else text[:147] + "..."
