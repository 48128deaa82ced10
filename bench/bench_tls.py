"""ztid mTLS sockets against plain stdlib ``ssl`` with the same certificates, in the same run.

Two figures, each as a ratio ztid / stdlib (target >= 0.95):

* **handshakes/s**: a sequential client opens a TLS 1.3 mTLS connection, the server accepts it and
  sends one byte, the client reads it and closes. The server runs in a forked process (one core each).
  stdlib: ``SSLContext.wrap_socket`` on both sides (chain verified by OpenSSL, no authorization at all).
  ztid: ``tls.listen().accept()`` / ``tls.connect()`` (OpenSSL's check, plus the chain re-verified
  against the peer's own trust domain's bundle, identity mapping and a policy decision on each side).
* **bulk MB/s**: one stream of ``--mib`` MiB (default 256) in 1 MiB ``sendall`` calls, acknowledged.

Rounds alternate stdlib / ztid / control (order rotated each round); the ratio is the median of the
per-round ratios. "control" is stdlib against a second, identical stdlib server: its ratio to stdlib
would be 1.000 on a quiet machine, so its distance from 1 is the noise band of the run. For CPU per handshake, lower is better (a ratio near 1.0 means ztid's own work is small). ``python -m bench tls``, or
``python bench/bench_tls.py --seconds 0.25 --rounds 24 --bulk-rounds 12 --mib 256``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TD = "ai-platform.example"
CHUNK = 1 << 20


class _Setup:
    def __init__(self, tmp: str) -> None:
        from ztid.bundle import BundleSet
        from ztid.devca import DevCA
        from ztid.policy import load_policy
        from ztid.source import StaticSource

        ca = DevCA.create(TD, intermediate=True)
        self.policy = load_policy(ROOT / "policy.yaml")
        bundles = BundleSet([ca.bundle()])
        server, client = ca.issue(f"spiffe://{TD}/data-store/main"), ca.issue(f"spiffe://{TD}/training/job-7")
        self.server_src, self.client_src = StaticSource(server, bundles), StaticSource(client, bundles)
        self.files = {}
        for name, svid in (("server", server), ("client", client)):
            path = os.path.join(tmp, f"{name}.pem")
            Path(path).write_bytes(svid.key_pem() + svid.chain_pem())
            self.files[name] = path
        self.cafile = os.path.join(tmp, "bundle.pem")
        Path(self.cafile).write_bytes(ca.bundle().to_pem())

    def plain_context(self, server_side: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.cafile)
        ctx.load_cert_chain(self.files["server" if server_side else "client"])
        if server_side:
            ctx.num_tickets = 0
        return ctx


def _serve(setup: _Setup, mode: str, kind: str, ready: Any, mib: int) -> None:
    """Server process: accept forever; per connection send one byte (handshake) or sink a stream (bulk)."""
    if mode == "ztid":
        from ztid.enforce import tls

        listener = tls.listen(("127.0.0.1", 0), source=setup.server_src, policy=setup.policy)
        ready.send(listener.address)
        accept = lambda: listener.accept()[0]  # noqa: E731
    else:
        ctx = setup.plain_context(True)
        lsock = socket.create_server(("127.0.0.1", 0))
        ready.send(lsock.getsockname())
        accept = lambda: ctx.wrap_socket(lsock.accept()[0], server_side=True)  # noqa: E731
    buf = bytearray(CHUNK)
    while True:
        conn = accept()
        if kind == "hs":
            conn.sendall(b"1")
        else:
            view, left = memoryview(buf), mib * CHUNK
            while left > 0:
                got = conn.recv_into(view, min(left, CHUNK))
                if not got:
                    break
                left -= got
            conn.sendall(b"k")
        conn.close()


def _client(setup: _Setup, mode: str) -> Any:
    if mode == "ztid":
        from ztid.enforce import tls

        return lambda addr: tls.connect(addr, source=setup.client_src, policy=setup.policy, expect="data-store")
    ctx = setup.plain_context(False)
    return lambda addr: ctx.wrap_socket(socket.create_connection(addr))


class _Servers:
    """One server process per (mode, kind), started once and shared by all rounds."""

    def __init__(self, setup: _Setup, mib: int) -> None:
        ctx = mp.get_context("fork")
        self.procs, self.addrs = [], {}
        for mode in ("stdlib", "ztid", "control"):
            for kind in ("hs", "bulk"):
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_serve, args=(setup, mode, kind, send, mib), daemon=True)
                proc.start()
                self.procs.append(proc)
                self.addrs[(mode, kind)] = recv.recv()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.join()


def handshakes(connect: Any, addr: Any, seconds: float) -> tuple[float, float]:
    """(handshakes/s, client CPU µs per handshake)."""
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        conn = connect(addr)
        conn.recv(1)
        conn.close()
        count += 1
    return count / elapsed, (time.process_time() - cpu) / count * 1e6


def bulk(connect: Any, addr: Any, mib: int, data: bytes) -> float:
    """MB/s of one stream, until the server acknowledged the last byte."""
    conn = connect(addr)
    start = time.perf_counter()
    for _ in range(mib):
        conn.sendall(data)
    assert conn.recv(1) == b"k"
    elapsed = time.perf_counter() - start
    conn.close()
    return mib * CHUNK / elapsed / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="per handshake round")
    parser.add_argument("--rounds", type=int, default=24, help="handshake rounds")
    parser.add_argument("--bulk-rounds", type=int, default=12, help="bulk rounds (single streams are noisy: take many)")
    parser.add_argument("--mib", type=int, default=256, help="bulk stream size")
    args = parser.parse_args(argv or [])
    results: dict[tuple[str, str], list[float]] = {}
    data = os.urandom(CHUNK)
    with tempfile.TemporaryDirectory(prefix="ztid-bench-") as tmp:
        setup = _Setup(tmp)
        servers = _Servers(setup, args.mib)
        try:
            clients = {mode: _client(setup, mode) for mode in ("stdlib", "ztid", "control")}
            orders = [("stdlib", "ztid", "control"), ("control", "ztid", "stdlib"), ("ztid", "stdlib", "control")]
            for mode in clients:  # warm every path (imports, first contexts)
                handshakes(clients[mode], servers.addrs[(mode, "hs")], 0.2)
            for r in range(args.rounds):
                for mode in orders[r % 3]:
                    rate, cpu = handshakes(clients[mode], servers.addrs[(mode, "hs")], args.seconds)
                    results.setdefault(("hs", mode), []).append(rate)
                    results.setdefault(("cpu", mode), []).append(cpu)
            for r in range(args.bulk_rounds):
                for mode in orders[r % 3]:
                    results.setdefault(("bulk", mode), []).append(bulk(clients[mode], servers.addrs[(mode, "bulk")], args.mib, data))
        finally:
            servers.close()
    print(f"TLS 1.3 mTLS over 127.0.0.1, rounds alternating stdlib/ztid ({args.rounds} x {args.seconds} s handshakes, "
          f"{args.bulk_rounds} bulk); medians, ratio = median of per-round ratios (pairs of back-to-back runs)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (client and servers share them)")
    print("  control: stdlib against a second stdlib server, measured the same way; its ratio shows the noise band")
    for kind, unit, label in (("hs", "handshakes/s", "sequential handshakes"), ("bulk", "MB/s", f"bulk, one {args.mib} MiB stream"),
                              ("cpu", "µs", "client CPU per handshake")):
        ref, ours, ctl = results[(kind, "stdlib")], results[(kind, "ztid")], results[(kind, "control")]
        paired = statistics.median(o / r for o, r in zip(ours, ref))
        control = statistics.median(c / r for c, r in zip(ctl, ref))
        print(f"  {label:<26} stdlib {statistics.median(ref):8.1f} {unit:<12} ztid {statistics.median(ours):8.1f} {unit:<12} "
              f"ratio {paired:5.3f}   (control {control:5.3f})")

if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
