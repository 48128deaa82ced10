"""Model signing throughput: ztid sign/verify of a model directory against plain sha256 of the same files.

The model is a directory of a few files (default 1 GiB in total; ``ZTID_BENCH_SIGN_MB`` shrinks it),
warm in the page cache, so this measures hashing and signing overhead rather than the disk.
References, measured in the same run and interleaved with the ztid rounds:

* ``sha256sum``-equivalent: hashlib sha256 over each file in 1 MiB reads, one file after another
  (the issue's target: ztid >= 0.9x this);
* the same with one thread per file (as many as model-signing's file pool uses), for a fair view of
  what parallel hashing alone gives on this machine.

ztid figures: ``sign_model`` (hash, build and sign the statement, write the signature) and
``verify_model`` (parse, DSSE check, chain at signing time, policy, re-hash and compare).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ztid.bundle import BundleSet
from ztid.demo import default_policy_path
from ztid.policy import load_policy
from ztid.signing import sign_model, verify_model
from ztid.testing import TestCA

FILES = 4
ROUNDS = 3
CHUNK = 1 << 20


def _size_mb() -> int:
    try:
        return max(4, int(os.environ.get("ZTID_BENCH_SIGN_MB", "1024")))
    except ValueError:
        return 1024


def _write_model(root: Path, total_mb: int) -> list[Path]:
    block = os.urandom(CHUNK)
    sizes = [total_mb // FILES] * FILES
    sizes[0] += total_mb - sum(sizes)
    paths = []
    for i, mb in enumerate(sizes):
        path = root / f"model-{i:05d}-of-{FILES:05d}.safetensors"
        with path.open("wb") as f:
            for j in range(mb):
                f.write(block[j % 251:] + block[: j % 251])  # no two chunks alike
        paths.append(path)
    (root / "config.json").write_text('{"architectures": ["Bench"], "hidden_size": 4096}\n')
    return paths


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sequential(paths: list[Path]) -> Callable[[], object]:
    return lambda: [_sha256_file(p) for p in paths]


def _threaded(paths: list[Path]) -> Callable[[], object]:
    def run() -> object:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(paths)) as pool:
            return list(pool.map(_sha256_file, paths))

    return run


def main() -> None:
    total_mb = _size_mb()
    policy = load_policy(default_policy_path())
    ca = TestCA.create("ai-platform.example", intermediate=True)
    svid = ca.issue("spiffe://ai-platform.example/training/bench")
    bundles = BundleSet([ca.bundle()])
    with tempfile.TemporaryDirectory(prefix="ztid-bench-sign-") as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        paths = _write_model(model, total_mb)
        nbytes = sum(p.stat().st_size for p in model.iterdir())
        sig = Path(tmp) / "model.sig"

        def do_verify() -> object:
            result = verify_model(model, signature=sig, bundles=bundles, policy=policy)
            assert result.allowed
            return result

        cases: list[tuple[str, Callable[[], object]]] = [
            ("sha256sum-equivalent (hashlib, files in sequence)", _sequential(paths)),
            (f"hashlib sha256, {len(paths)} threads (one per file)", _threaded(paths)),
            ("ztid sign_model", lambda: sign_model(model, svid, signature=sig)),
            ("ztid verify_model", do_verify),
        ]
        for _, fn in cases:  # warm the page cache and every code path once
            fn()
        samples: list[list[float]] = [[] for _ in cases]
        for _ in range(ROUNDS):
            for i, (_, fn) in enumerate(cases):
                start = time.perf_counter()
                fn()
                samples[i].append(time.perf_counter() - start)
        times = [statistics.median(s) for s in samples]

    print(f"model: {len(paths)} weight files + config.json, {nbytes / 2**20:.0f} MiB, page cache warm; "
          f"median of {ROUNDS} interleaved rounds; {os.cpu_count()} CPUs")
    ref_seq, ref_par = times[0], times[1]
    print(f"{'case':<52} {'seconds':>8} {'GB/s':>7} {'vs sha256sum':>13} {'vs threaded':>12}")
    for (name, _), t in zip(cases, times):
        print(f"{name:<52} {t:>8.3f} {nbytes / t / 1e9:>7.2f} {ref_seq / t:>12.2f}x {ref_par / t:>11.2f}x")
    print(f"target: ztid sign and verify >= 0.9x the sha256sum-equivalent -> "
          f"sign {ref_seq / times[2]:.2f}x, verify {ref_seq / times[3]:.2f}x")


if __name__ == "__main__":
    main()
