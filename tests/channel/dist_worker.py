"""One rank of a multi-process channel test: ``python dist_worker.py SCENARIO RANK WORLD PORT DIR``.

DIR holds rank<N>.pem/.key (the SVID minted by the test), bundle.pem and policy.yaml; the rank writes
its outcome to DIR/result<N>.json. Scenarios: ``collectives`` (encrypted results vs gloo's plaintext
ones, rekey mid-stream) and ``handshake`` (only init_secure; the outcome says what it raised).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path


def main() -> None:
    scenario, rank, world, port, directory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    import torch
    import torch.distributed as dist

    from ztid import distributed as zd
    from ztid.bundle import BundleSet
    from ztid.policy import load_policy
    from ztid.source import StaticSource
    from ztid.svid import X509Svid

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=dt.timedelta(seconds=60))
    svid = X509Svid.load(directory / f"rank{rank}.pem", directory / f"rank{rank}.key")
    extra = directory / f"bundle_rank{rank}.pem"  # a rank-specific extra bundle (the foreign rank trusts both domains)
    source = StaticSource(svid, BundleSet.load(directory / "bundle.pem", *([extra] if extra.exists() else [])))
    policy = load_policy(directory / "policy.yaml")
    result: dict[str, object] = {"rank": rank}
    try:
        sg = zd.init_secure(source=source, policy=policy, timeout=20.0, segment_size=1 << 16)
        result["init"] = "ok"
        result["peers"] = {str(k): str(v) for k, v in sg.peers.items()}
    except Exception as exc:  # the test asserts on the type and message
        result["init"] = type(exc).__name__
        result["error"] = str(exc)
        sg = None
    if scenario == "collectives" and sg is not None:
        result.update(collectives(torch, dist, zd, sg, rank, world, source, svid, directory, policy))
    (directory / f"result{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def collectives(torch, dist, zd, sg, rank: int, world: int, source, svid, directory, policy) -> dict[str, object]:  # type: ignore[no-untyped-def]
    import ztid.distributed.collectives as zc

    zc.PIECE = 1 << 16  # many frames per hop: the pipelined paths (and pieces of unequal counts) run
    out: dict[str, object] = {}
    gen = torch.Generator().manual_seed(1234 + rank)
    # point to point, several dtypes and shapes, bitwise (rank 0 -> every other rank)
    shapes = [((3, 5), torch.float32), ((0,), torch.float32), ((257, 1031), torch.bfloat16), ((2, 3, 4), torch.int64)]
    ok = True
    for shape, dtype in shapes:
        ref = (torch.randn(shape, generator=torch.Generator().manual_seed(7)) * 100).to(dtype)
        if rank == 0:
            for peer in range(1, world):
                zd.encrypted_send(ref, peer)
        else:
            got = torch.empty(shape, dtype=dtype)
            zd.encrypted_recv(got, 0)
            ok &= torch.equal(got, ref)
    out["p2p"] = ok
    # broadcast, bitwise against gloo's
    t = torch.randn(1000, 37, generator=gen)
    plain, enc = t.clone(), t.clone()
    dist.broadcast(plain, src=1)
    zd.broadcast(enc, src=1)
    out["broadcast"] = torch.equal(plain, enc)
    # all_gather, bitwise
    t = torch.randn(4097, generator=gen)
    plain_list = [torch.empty_like(t) for _ in range(world)]
    enc_list = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(plain_list, t)
    zd.all_gather(enc_list, t)
    out["all_gather"] = all(torch.equal(a, b) for a, b in zip(plain_list, enc_list))
    # all_reduce (sizes that do not split evenly, and a tiny one), within tolerance; MAX exactly
    worst = 0.0
    for numel in (1, 5, 100_003, 1 << 20):
        t = torch.randn(numel, generator=gen)
        plain, enc = t.clone(), t.clone()
        dist.all_reduce(plain)
        zd.all_reduce(enc)
        worst = max(worst, float((plain - enc).abs().max()))
        gathered = [torch.empty_like(enc) for _ in range(world)]
        dist.all_gather(gathered, enc)
        out.setdefault("reduce_identical_on_all_ranks", True)
        out["reduce_identical_on_all_ranks"] = out["reduce_identical_on_all_ranks"] and all(torch.equal(g, enc) for g in gathered)
    out["all_reduce_max_abs_err"] = worst
    t = torch.randn(999, generator=gen)
    plain, enc = t.clone(), t.clone()
    dist.all_reduce(plain, op=dist.ReduceOp.MAX)
    zd.all_reduce(enc, op=dist.ReduceOp.MAX)
    out["all_reduce_max_exact"] = torch.equal(plain, enc)
    # non-contiguous input
    t = torch.randn(64, 64, generator=gen).t()
    plain, enc = t.clone(), t.clone()
    dist.all_reduce(plain)
    zd.all_reduce(enc)
    out["all_reduce_noncontiguous"] = bool(torch.allclose(plain, enc, atol=1e-5))
    # a subgroup of ranks 0 and 2 (global ranks differ from group ranks for rank 2)
    sub = dist.new_group([0, 2])
    if rank in (0, 2):
        sub_sg = zd.init_secure(sub, source=source, policy=policy, timeout=20.0, segment_size=1 << 16)
        t = torch.randn(3001, generator=gen)
        plain, enc = t.clone(), t.clone()
        dist.all_reduce(plain, group=sub)
        zd.all_reduce(enc, group=sub)
        b_plain, b_enc = t.clone(), t.clone()
        dist.broadcast(b_plain, src=2, group=sub)  # global ranks, as torch.distributed names them
        zd.broadcast(b_enc, src=2, group=sub)
        out["subgroup"] = bool(torch.allclose(plain, enc, atol=1e-5)) and torch.equal(b_plain, b_enc) and sub_sg.world_size == 2
        zd.close_secure(sub)
    else:
        out["subgroup"] = True
    # rekey mid-stream: a rotated SVID (same ID re-issued here) moves every channel to a new epoch
    before = {p: ch.send_epoch for p, ch in sg.channels.items()}
    source.update(svid, source.snapshot().bundles)  # publishes: init_secure subscribed sg.rekey()
    t = torch.randn(50_000, generator=gen)
    plain, enc = t.clone(), t.clone()
    dist.all_reduce(plain)
    zd.all_reduce(enc)
    out["after_rekey_close"] = bool(torch.allclose(plain, enc, atol=1e-4))
    right = (rank + 1) % world  # the ring sends to the right; a rekey is applied at the next send
    out["send_epochs_advanced"] = sg.channels[right].send_epoch == before[right] + 1
    out["recv_epoch_advanced"] = sg.channels[(rank - 1) % world].recv_epoch == 1  # the ring receives from the left
    # re-authentication: a rotated SVID (a new certificate and key) and a new handshake at a step boundary
    rotated = type(svid).load(directory / f"rank{rank}.rotated.pem", directory / f"rank{rank}.rotated.key")
    source.update(rotated, source.snapshot().bundles)
    old_keys = {p: ch.keys.send.key for p, ch in sg.channels.items()}
    sg2 = zd.init_secure(source=source, policy=policy, timeout=20.0, segment_size=1 << 16)
    t = torch.randn(10_000, generator=gen)
    plain, enc = t.clone(), t.clone()
    dist.all_reduce(plain)
    zd.all_reduce(enc)
    out["after_rehandshake_close"] = bool(torch.allclose(plain, enc, atol=1e-4))
    out["new_keys"] = all(sg2.channels[p].keys.send.key != old_keys[p] for p in old_keys)
    out["old_group_closed"] = all(ch._closed for ch in sg.channels.values())
    return out


if __name__ == "__main__":
    main()
