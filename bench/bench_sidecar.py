"""The ext_authz sidecar next to a bare grpc.aio Check server that always answers OK.

Same run, same transport (a unix socket), same request: an Envoy-shaped CheckRequest (SPIFFE
principal, URL-encoded certificate, headers, context_extensions) that the shipped policy allows.
Both servers run in their own process; the ztid one is the real :class:`ztid.sidecar.Sidecar`
with the decision log on (fsync at checkpoints, a signed checkpoint every 1000 decisions).

1. Throughput: ``h2load`` (Debian's nghttp2-client, a C HTTP/2 client sending gRPC frames) with
   64 streams in flight, when it is installed; otherwise two grpc.aio client processes.
2. Latency at half of ztid's saturating rate: open loop at that fixed rate to each server,
   ``h2load --rps`` with its per-request log (or, without h2load, a paced grpc.aio client whose
   own cost is then included in p50/p99).

3. Multi-process mode (with h2load): ztid with ``workers: 2`` (SO_REUSEPORT) on TCP against the
   bare server, one process, on TCP; 8 connections so the kernel spreads them over the workers.

Targets from issue 4: RPS ratio >= 0.9, p99 <= 2 ms. Nothing here asserts timings.
Run alone: ``python -m bench sidecar`` (about 50 s; ``ZTID_BENCH_SECONDS``, ``ZTID_BENCH_ROUNDS``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

DURATION = float(os.environ.get("ZTID_BENCH_SECONDS", "4"))
ROOT = Path(__file__).resolve().parents[1]
TD = "ai-platform.example"


# ---------------------------------------------------------------- the two servers (child processes)

def _request_bytes(directory: Path) -> bytes:
    from envoy.service.auth.v3 import attribute_context_pb2 as ac
    from envoy.service.auth.v3 import external_auth_pb2 as ea

    pem = (directory / "client.pem").read_text()
    req = ea.CheckRequest(attributes=ac.AttributeContext(
        source=ac.AttributeContext.Peer(principal=f"spiffe://{TD}/training/job-7", certificate=urllib.parse.quote(pem)),
        destination=ac.AttributeContext.Peer(principal=f"spiffe://{TD}/registry/main"),
        request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(
            id="1", method="POST", path="/v1/models/llama", host="registry", scheme="https", protocol="HTTP/2",
            headers={":method": "POST", ":path": "/v1/models/llama", ":authority": "registry",
                     "content-type": "application/json", "user-agent": "bench", "x-request-id": "1"})),
        context_extensions={"ztid.target": "registry", "ztid.action": "write"},
    ))
    return req.SerializeToString()


async def _serve_bare(sock: str) -> None:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2 as ea
    from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
    from google.rpc import code_pb2, status_pb2

    ok = ea.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

    class Bare(ea_grpc.AuthorizationServicer):
        async def Check(self, request: ea.CheckRequest, context: object) -> ea.CheckResponse:  # noqa: N802
            return ok

    server = grpc.aio.server()
    ea_grpc.add_AuthorizationServicer_to_server(Bare(), server)
    server.add_insecure_port(sock)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def _ztid_config(sock: str, directory: Path, workers: int = 1) -> object:
    from ztid.sidecar import SidecarConfig

    log = directory / ("decisions.log" if workers == 1 else "decisions-workers.log")
    return SidecarConfig(policy=str(ROOT / "policy.yaml"), listen=(sock,), bundles=(str(directory / "bundle.pem"),),
                         svid_cert=str(directory / "sidecar.pem"), svid_key=str(directory / "sidecar.key"),
                         decision_log=str(log), checkpoint_every=1000, fsync="checkpoint", workers=workers)


def _serve_ztid_workers(address: str, directory: Path, workers: int) -> None:
    from ztid.sidecar.workers import serve_workers

    def ready(sidecar: object) -> None:
        async def loaded() -> None:
            await sidecar.wait_loaded(30)  # type: ignore[attr-defined]
            await asyncio.sleep(1)  # the other workers load alongside
            print("ready", flush=True)

        asyncio.get_running_loop().create_task(loaded())

    serve_workers(_ztid_config(address, directory, workers), ready=ready, log_level="CRITICAL")  # type: ignore[arg-type]


async def _serve_ztid(sock: str, directory: Path) -> None:
    from ztid.sidecar import Sidecar

    cfg = _ztid_config(sock, directory)
    sidecar = Sidecar(cfg)  # type: ignore[arg-type]
    await sidecar.start()
    await sidecar.wait_loaded(30)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- load generators

def _h2load(sock: str, body: Path, streams: int, connections: int = 1) -> float:
    where = [f"--base-uri={sock}", "http://localhost/envoy.service.auth.v3.Authorization/Check"] \
        if sock.startswith("unix:") else [f"http://{sock}/envoy.service.auth.v3.Authorization/Check"]
    proc = subprocess.run(
        ["h2load", "-t1", f"-c{connections}", f"-m{streams // connections}", "-D", str(max(1, round(DURATION))),
         "--warm-up-time", "1", "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", *where],
        capture_output=True, text=True, timeout=DURATION + 60,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed", out)
    if not m or (failed and int(failed.group(1))):
        raise RuntimeError(f"h2load failed: {out[-400:]}")
    return float(m.group(1))


async def _closed_loop(sock: str, data: bytes, inflight: int, seconds: float) -> int:
    import grpc

    done = 0
    async with grpc.aio.insecure_channel(sock) as ch:
        call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await call(data)
                done += 1

        await asyncio.gather(*(worker() for _ in range(inflight)))
    return done


async def _paced(sock: str, data: bytes, rate: float, seconds: float) -> list[float]:
    import grpc

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(sock) as ch:
        call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for _ in range(200):
            await call(data)  # warm up

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                await call(data, timeout=5)
            except grpc.RpcError:
                latencies.append(float("inf"))  # counted, and it lands in the tail where it belongs
                return
            latencies.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def _client_main(mode: str, sock: str, req_path: str, arg: str, seconds: str) -> None:
    data = Path(req_path).read_bytes()
    if mode == "closed":
        print(asyncio.run(_closed_loop(sock, data, int(arg), float(seconds))), flush=True)
    else:
        lat = asyncio.run(_paced(sock, data, float(arg), float(seconds)))
        print(" ".join(f"{x:.7f}" for x in lat), flush=True)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.bench_sidecar", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)


def _py_throughput(sock: str, req: Path) -> float:
    procs = [_spawn("client", "closed", sock, str(req), "32", str(DURATION)) for _ in range(2)]
    total = sum(int(p.communicate(timeout=DURATION + 60)[0].strip()) for p in procs)
    return total / DURATION


def _latency(sock: str, req: Path, body: Path, rate: float) -> tuple[float, float]:
    seconds = max(2, round(min(DURATION, 4)))
    if shutil.which("h2load"):
        # Open loop at a fixed rate from the C client; its per-request log gives the percentiles.
        log = body.with_suffix(f".{abs(hash(sock))}.tsv")
        subprocess.run(
            ["h2load", "-t1", "-c1", "-m16", f"--rps={max(1, round(rate))}", "-D", str(seconds), "--warm-up-time", "1",
             "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", f"--base-uri={sock}",
             f"--log-file={log}", "http://localhost/envoy.service.auth.v3.Authorization/Check"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )
        lat = sorted(int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines() if line.strip())
    else:
        p = _spawn("client", "paced", sock, str(req), f"{rate:.1f}", str(seconds))
        lat = sorted(float(x) for x in p.communicate(timeout=seconds + 60)[0].split())
    return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3


# ---------------------------------------------------------------- main

def _prepare(directory: Path) -> tuple[Path, Path]:
    from ztid.testing import TestCA

    ca = TestCA.create(TD)
    svid = ca.issue(f"spiffe://{TD}/ztid/sidecar")
    (directory / "bundle.pem").write_bytes(ca.bundle().to_pem())
    (directory / "sidecar.pem").write_bytes(svid.chain_pem())
    (directory / "sidecar.key").write_bytes(svid.key_pem())
    (directory / "client.pem").write_bytes(ca.mint(f"spiffe://{TD}/training/job-7").chain_pem())
    data = _request_bytes(directory)
    (directory / "request.bin").write_bytes(data)
    (directory / "body.grpc").write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
    return directory / "request.bin", directory / "body.grpc"


ROUNDS = int(os.environ.get("ZTID_BENCH_ROUNDS", "2"))
WORKERS = int(os.environ.get("ZTID_BENCH_WORKERS", "2"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _multi_process(directory: Path, body: Path) -> None:
    """Multi-process mode over TCP (SO_REUSEPORT workers) against the bare server on TCP, 8 connections."""
    rows: dict[str, float] = {}
    for name, mode in (("bare grpc.aio, 1 process, TCP", "serve-bare"), (f"ztid, {WORKERS} workers, TCP", "serve-workers")):
        address = f"127.0.0.1:{_free_port()}"
        proc = _spawn(mode, address, str(directory), str(WORKERS))
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            rows[name] = max(_h2load(address, body, 64, connections=8) for _ in range(max(1, ROUNDS - 1)))
        finally:
            proc.terminate()
            proc.wait(30)
    (bare_name, bare), (ztid_name, ztid) = rows.items()
    print(f"multi-process: {bare_name} {bare:.0f} RPS; {ztid_name} {ztid:.0f} RPS; ratio {ztid / bare:.2f} "
          f"(h2load -c8, best of {max(1, ROUNDS - 1)})")
BARE, ZTID = "bare grpc.aio (always OK)", "ztid sidecar (policy + log)"


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ztbench"))
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    try:
        req, body = _prepare(directory)
        h2load = shutil.which("h2load") is not None
        print(f"load generator: {'h2load -c1 -m64' if h2load else 'grpc.aio clients, 2 processes x 32 in flight'}; "
              f"{ROUNDS} interleaved rounds of {DURATION:g} s per server (best round counts); transport: unix socket")
        for name, mode in ((BARE, "serve-bare"), (ZTID, "serve-ztid")):
            sock = f"unix:{directory}/{mode}.sock"
            proc = _spawn(mode, sock, str(directory))
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            servers[name] = (proc, sock)
        rps: dict[str, list[float]] = {BARE: [], ZTID: []}
        for _ in range(ROUNDS):  # interleaved, so load from other processes hits both alike
            for name, (_, sock) in servers.items():
                rps[name].append(_h2load(sock, body, 64) if h2load else _py_throughput(sock, req))
        best = {name: max(v) for name, v in rps.items()}
        rate = best[ZTID] / 2
        lat: dict[str, list[tuple[float, float]]] = {BARE: [], ZTID: []}
        for _ in range(max(1, ROUNDS - 1)):
            for name, (_, sock) in servers.items():
                lat[name].append(_latency(sock, req, body, rate))
        print(f"{'server':30} {'RPS (best)':>10} {'p50 ms':>8} {'p99 ms':>8}   rounds RPS; latency at {rate:.0f} req/s")
        for name in (BARE, ZTID):
            p50, p99 = min(lat[name], key=lambda t: t[1])
            rounds = "/".join(f"{x:.0f}" for x in rps[name])
            print(f"{name:30} {best[name]:10.0f} {p50:8.3f} {p99:8.3f}   {rounds}; p99 rounds "
                  + "/".join(f"{t[1]:.2f}" for t in lat[name]))
        p99 = min(t[1] for t in lat[ZTID])
        print(f"ratio ztid/bare RPS: {best[ZTID] / best[BARE]:.2f} (target >= 0.9); "
              f"ztid p99 {p99:.3f} ms at half its max rate (target <= 2 ms)")
        try:
            load = os.getloadavg()[0]
            print(f"machine load average during the run: {load:.1f} on {os.cpu_count()} CPUs")
        except OSError:
            pass
        lines = sum(1 for _ in open(directory / "decisions.log", "rb"))
        print(f"decision log: {lines} lines written synchronously during the runs")
        if h2load and WORKERS > 1:
            _multi_process(directory, body)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve-bare":
        asyncio.run(_serve_bare(sys.argv[2]))
    elif sys.argv[1] == "serve-workers":
        _serve_ztid_workers(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "serve-ztid":
        asyncio.run(_serve_ztid(sys.argv[2], Path(sys.argv[3])))
    elif sys.argv[1] == "client":
        _client_main(*sys.argv[2:7])
