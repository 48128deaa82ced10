"""Encrypted channel and collectives against plaintext, same run: socket transfer, gloo all_reduce, raw AES-GCM.

1. Ceiling: raw ``AESGCM.encrypt_into`` over 1 MiB pieces, one thread and two threads (GB/s), and
   the channel's ``seal``/``open_into`` of the tensor in one process against it.
2. Socket transfer of 64 MiB tensors between two processes over loopback TCP: plaintext
   ``sendall``/``recv_into`` against ``Channel.send``/``recv_into`` on the same kind of socket
   (target >= 0.8x). Rounds alternate; the ratio is the median of per-round ratios.
3. gloo ``all_reduce`` of a 64 MiB float32 tensor on 2 ranks: ``dist.all_reduce`` against
   ``ztid.distributed.all_reduce`` (encrypted ring; aim >= 0.5x), after ``init_secure`` (its time shown).

``ZTID_BENCH_CHANNEL_MB`` shrinks the tensor (default 64), ``ZTID_BENCH_CHANNEL_ROUNDS`` the rounds (default 5).
Both sides share this machine's cores, so every loopback figure measures the pair.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import resource
import socket
import statistics
import struct
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MB = int(os.environ.get("ZTID_BENCH_CHANNEL_MB", "64"))
ROUNDS = int(os.environ.get("ZTID_BENCH_CHANNEL_ROUNDS", "5"))
NBYTES = MB << 20
MSGS = 4  # tensors per socket round


def _aes_ceiling() -> tuple[float, float]:
    key = AESGCM.generate_key(256)
    piece, total = 1 << 20, min(NBYTES, 64 << 20)

    def worker(out: list[float]) -> None:
        a, src, dst = AESGCM(key), bytearray(os.urandom(piece)), bytearray(piece + 16)
        nonce = os.urandom(12)
        a.encrypt_into(nonce, src, None, dst)
        start = time.perf_counter()
        for _ in range(total // piece):
            a.encrypt_into(nonce, src, None, dst)
        out.append(total / (time.perf_counter() - start) / 1e9)

    one: list[float] = []
    worker(one)
    two: list[float] = []
    threads = [threading.Thread(target=worker, args=(two,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return one[0], sum(two)


def _keys() -> tuple[Any, Any]:
    from ztid.crypto.session import derive_session
    from ztid.spiffeid import SpiffeId

    a, b = SpiffeId.parse("spiffe://bench.example/training/a"), SpiffeId.parse("spiffe://bench.example/training/b")
    common = dict(initiator_secret=os.urandom(32), responder_secret=os.urandom(32), initiator_id=a, responder_id=b, channel_id=os.urandom(16))
    return derive_session(initiator=True, **common)[0], derive_session(initiator=False, **common)[0]


def _receiver(port: int, keys: Any) -> None:
    import numpy as np

    from ztid.crypto.channel import Channel

    plain = socket.create_connection(("127.0.0.1", port))
    enc = socket.create_connection(("127.0.0.1", port))
    ch = Channel(keys, sock=enc)
    buf = np.empty(NBYTES // 4, dtype=np.float32)
    view = memoryview(buf).cast("B")
    while True:
        cmd = plain.recv(1)
        cpu = _cpu()
        if cmd == b"P":
            for _ in range(MSGS):
                got = 0
                while got < NBYTES:
                    got += plain.recv_into(view[got:])
            plain.sendall(struct.pack(">d", _cpu() - cpu))
        elif cmd == b"E":
            for _ in range(MSGS):
                ch.recv_into(buf)
            enc.sendall(struct.pack(">d", _cpu() - cpu))
        else:
            return


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _socket_race() -> tuple[list[float], list[float], list[float], list[float]]:
    import numpy as np

    from ztid.crypto.channel import Channel

    ki, kr = _keys()
    server = socket.create_server(("127.0.0.1", 0))
    child = mp.get_context("fork").Process(target=_receiver, args=(server.getsockname()[1], kr), daemon=True)
    child.start()
    plain, _ = server.accept()
    enc, _ = server.accept()
    ch = Channel(ki, sock=enc)
    tensor = np.random.default_rng(0).standard_normal(NBYTES // 4).astype(np.float32)

    def round_trip(cmd: bytes, send: Any, ack: socket.socket, cpu: list[float]) -> float:
        start, cpu0 = time.perf_counter(), _cpu()
        plain.sendall(cmd)
        for _ in range(MSGS):
            send(tensor)
        (child_cpu,) = struct.unpack(">d", ack.recv(8, socket.MSG_WAITALL))
        cpu.append(_cpu() - cpu0 + child_cpu)
        return time.perf_counter() - start

    scratch: list[float] = []
    round_trip(b"P", plain.sendall, plain, scratch), round_trip(b"E", ch.send, enc, scratch)  # warm: page in buffers
    p, e, pc, ec = [], [], [], []
    for _ in range(ROUNDS):
        p.append(round_trip(b"P", plain.sendall, plain, pc))
        e.append(round_trip(b"E", ch.send, enc, ec))
    plain.sendall(b"Q")
    child.join(10)
    server.close()
    return p, e, pc, ec


def _rank(rank: int, port: int, source: Any, policy_path: str, queue: Any) -> None:
    import torch
    import torch.distributed as dist

    from ztid import distributed as zd
    from ztid.policy import load_policy

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=dt.timedelta(seconds=120))
    start = time.perf_counter()
    zd.init_secure(source=source, policy=load_policy(policy_path))
    init_s = time.perf_counter() - start
    t = torch.randn(NBYTES // 4, generator=torch.Generator().manual_seed(rank))
    work = t.clone()
    plain, enc = [], []
    for r in range(ROUNDS + 1):
        for fn, out in ((dist.all_reduce, plain), (zd.all_reduce, enc)):
            work.copy_(t)
            dist.barrier()
            s = time.perf_counter()
            fn(work)
            if r:  # round 0 warms buffers
                out.append(time.perf_counter() - s)
    if rank == 0:
        queue.put((init_s, plain, enc))
    dist.destroy_process_group()


def _gloo_race() -> tuple[float, list[float], list[float]]:
    from ztid.bundle import BundleSet
    from ztid.demo import default_policy_path
    from ztid.devca import DevCA
    from ztid.source import StaticSource

    ca = DevCA.create("ai-platform.example")
    bundles = BundleSet([ca.bundle()])
    sources = [StaticSource(ca.issue(f"spiffe://ai-platform.example/training/bench/rank-{r}"), bundles) for r in range(2)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, sources[r], str(default_policy_path()), queue)) for r in range(2)]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join(30)
    return result


def _seal_open() -> tuple[float, float]:
    """In one process, no transport: seal and open_into of the tensor (the channel's crypto path alone)."""
    import numpy as np

    from ztid.crypto.channel import Channel

    ki, kr = _keys()
    a, b = Channel(ki), Channel(kr)
    x = np.random.default_rng(1).standard_normal(NBYTES // 4).astype(np.float32)
    out = np.empty_like(x)
    b.open_into(a.seal(x), out)  # warm
    seal, opened = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        frame = a.seal(x)
        t1 = time.perf_counter()
        b.open_into(frame, out)
        seal.append(t1 - t0)
        opened.append(time.perf_counter() - t1)
    return NBYTES / statistics.median(seal) / 1e9, NBYTES / statistics.median(opened) / 1e9


def _ratio(fast: list[float], ref: list[float]) -> float:
    return statistics.median(r / f for f, r in zip(fast, ref))


def main() -> None:
    print(f"tensor {MB} MiB, {ROUNDS} alternating rounds (ZTID_BENCH_CHANNEL_MB / _ROUNDS to change)")
    one, two = _aes_ceiling()
    print(f"raw AES-256-GCM encrypt_into, 1 MiB pieces: 1 thread {one:.2f} GB/s, 2 threads {two:.2f} GB/s (ceiling)")

    seal_gbps, open_gbps = _seal_open()
    print(f"Channel.seal / open_into of the {MB} MiB tensor, in process (thread pool): {seal_gbps:.2f} / {open_gbps:.2f} GB/s "
          f"({seal_gbps / two:.2f}x / {open_gbps / two:.2f}x the 2-thread ceiling)")

    p, e, pc, ec = _socket_race()
    moved = MSGS * NBYTES
    gb = moved / 1e9
    print(f"socket transfer, {MSGS} x {MB} MiB tensor per round, loopback TCP, 2 processes:")
    print(f"  plaintext sendall/recv_into   {moved / min(p) / 1e9:6.2f} GB/s (best)  {moved / statistics.median(p) / 1e9:6.2f} GB/s (median)")
    print(f"  ztid Channel send/recv_into   {moved / min(e) / 1e9:6.2f} GB/s (best)  {moved / statistics.median(e) / 1e9:6.2f} GB/s (median)")
    print(f"  ratio encrypted/plaintext     {_ratio(e, p):.2f}x (median of per-round ratios; target >= 0.8x)")
    print(f"  CPU, sender + receiver        plaintext {statistics.median(pc) / gb:.2f} core-s/GB, "
          f"encrypted {statistics.median(ec) / gb:.2f} core-s/GB (less noisy than GB/s on a shared host)")

    try:
        import torch  # noqa: F401
    except ImportError:
        print("gloo all_reduce: skipped (torch not installed: pip install 'ztid[torch]')")
        return
    init_s, gp, ge = _gloo_race()
    print(f"gloo all_reduce of a {MB} MiB float32 tensor, 2 ranks (init_secure took {init_s * 1e3:.0f} ms):")
    print(f"  dist.all_reduce (plaintext)   {statistics.median(gp) * 1e3:7.1f} ms  ({NBYTES / statistics.median(gp) / 1e9:.2f} GB/s algorithm bandwidth)")
    print(f"  ztid all_reduce (encrypted)   {statistics.median(ge) * 1e3:7.1f} ms  ({NBYTES / statistics.median(ge) / 1e9:.2f} GB/s)")
    print(f"  ratio encrypted/plaintext     {_ratio(ge, gp):.2f}x (median of per-round ratios; aim >= 0.5x)")


if __name__ == "__main__":
    main()
