"""What a Check costs the sidecar, counted in instructions (callgrind), which this noisy box cannot blur.

Wall-clock RPS on a shared 2-vCPU VM swings by a third between runs (``bench sidecar`` shows it);
the user-space instructions a server executes per Check do not (runs agree within ~0.5%). Each
server runs under ``valgrind --tool=callgrind`` with instrumentation off until it is warm, then
h2load sends N Checks and the instructions counted over them are divided by N. Four servers:

- bare: the grpc.aio server that always answers OK (the reference of ``bench sidecar``);
- ztid: the real sidecar, shipped policy, decision log on;
- ztid, no log: the same without the decision log (diagnostic);
- floor: the least a plan-replaying, logged Check can do in Python on grpc.aio: parse, look up
  the decision inputs (principal, certificate, destination, target, action, method) in a dict,
  write one hash-chained line (id, prev, seq, time; ~300 bytes) and return a pre-serialized answer.
  No metrics, header stripping, validity checks or request fields in the line: a lower bound.

The RPS target (ztid >= 0.9 x bare) allows ``bare / 0.9 - bare`` extra instructions per Check; the
floor shows how much of that allowance the bare minimum already takes. Caveat: valgrind hides the
CPU's SHA extensions, so OpenSSL hashes each line with its generic code (~30 instructions a byte,
~20k for ztid's ~650-byte line; natively a few thousand): both ztid figures and the floor carry it.
Kernel time (the ``write(2)`` itself) is not counted. Skipped when valgrind or h2load is missing.
Run alone: ``python -m bench sidecar_cost`` (about 90 s; ``ZTID_BENCH_CHECKS``, default 2000).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = int(os.environ.get("ZTID_BENCH_CHECKS", "2000"))
SERVERS = (("bare", "bare grpc.aio (always OK)"), ("ztid", "ztid sidecar (policy + log)"),
           ("nolog", "ztid, no decision log"), ("floor", "floor: key lookup + one chained line"))


async def _serve_floor(sock: str, directory: Path) -> None:
    import hashlib
    import time

    import grpc
    from envoy.service.auth.v3 import external_auth_pb2 as ea
    from google.rpc import code_pb2, status_pb2

    from ztid.audit.ids import new_decision_id

    answer = ea.CheckResponse(status=status_pb2.Status(code=code_pb2.OK)).SerializeToString()
    fd = os.open(str(directory / "floor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    plans: dict[tuple[str, ...], bytes] = {}
    chain = {"prev": b"0" * 64, "seq": 0}
    before_id = b'{"action":"write","allowed":true,"component":"training","decision_id":"'
    before_prev = (b'","kind":"decision","peer":"spiffe://ai-platform.example/training/job-7","policy_digest":"'
                   + b"0" * 64 + b'","prev":"')

    async def check(data: bytes, context: object) -> bytes:
        attrs = ea.CheckRequest.FromString(data).attributes
        source, ext = attrs.source, attrs.context_extensions
        key = (source.principal, source.certificate, attrs.destination.principal, ext.get("ztid.target", ""),
               ext.get("ztid.action", ""), attrs.request.http.method)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = answer
        line = b"".join((before_id, new_decision_id().encode(), before_prev, chain["prev"], b'","seq":',
                         b"%d" % chain["seq"], b',"time":"', b"%.6f" % time.time(), b'"}\n'))
        os.write(fd, line)
        chain["prev"], chain["seq"] = hashlib.sha256(line[:-1]).hexdigest().encode(), chain["seq"] + 1
        return plan

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(check)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization", {"Check": handler}),))
    server.add_insecure_port(sock)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def _serve(kind: str, sock: str, directory: Path) -> None:
    from bench import bench_sidecar

    if kind == "bare":
        asyncio.run(bench_sidecar._serve_bare(sock))
    elif kind == "floor":
        asyncio.run(_serve_floor(sock, directory))
    else:
        asyncio.run(bench_sidecar._serve_ztid(sock, directory, log=kind == "ztid"))


def _h2load(sock: str, body: Path, n: int) -> None:
    from bench.bench_sidecar import _target

    subprocess.run(["h2load", "-t1", "-c1", "-m16", "-n", str(n), "-d", str(body), "-H", "content-type: application/grpc",
                    "-H", "te: trailers", *_target(sock)], check=True, capture_output=True, timeout=600)


def _instructions_per_check(kind: str, directory: Path, body: Path) -> float:
    sock = f"unix:{directory}/{kind}.sock"
    out = directory / f"callgrind.{kind}"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, "-m", "bench.bench_sidecar_cost", "serve", kind, sock, str(directory)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} server did not start under valgrind")
        _h2load(sock, body, 500)  # warm: plans made, caches filled, code paths taken once
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        _h2load(sock, body, CHECKS)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    total = 0
    for dump in directory.glob(f"callgrind.{kind}*"):
        m = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
        total += int(m.group(1)) if m else 0
    if not total:
        raise RuntimeError(f"callgrind wrote no totals for {kind}")
    return total / CHECKS


def main() -> None:
    missing = [tool for tool in ("valgrind", "callgrind_control", "h2load") if shutil.which(tool) is None]
    if missing:
        print(f"skipped: needs {', '.join(missing)} (Debian: valgrind, nghttp2-client)")
        return
    from bench.bench_sidecar import _prepare

    directory = Path(tempfile.mkdtemp(prefix="ztcost"))
    try:
        _, body = _prepare(directory)
        counts = {kind: _instructions_per_check(kind, directory, body) for kind, _ in SERVERS}
        bare = counts["bare"]
        print(f"user-space instructions per Check (callgrind, {CHECKS} Checks, h2load -c1 -m16, unix socket):")
        for kind, name in SERVERS:
            extra = counts[kind] - bare
            print(f"  {name:38} {counts[kind] / 1000:7.1f}k   {'' if kind == 'bare' else f'+{extra / 1000:5.1f}k':8}"
                  f"  ratio bare/this {bare / counts[kind]:.3f}")
        allowance = bare / 0.9 - bare
        floor = counts["floor"] - bare
        print(f"  allowance for ratio >= 0.9: +{allowance / 1000:.1f}k; the floor alone takes +{floor / 1000:.1f}k "
              f"({floor / allowance:.0%}); ztid takes +{(counts['ztid'] - bare) / 1000:.1f}k")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
