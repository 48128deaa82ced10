"""Run every benchmark (``make bench``), or the named ones: ``python -m bench policy tls``.

Each ``bench/bench_<area>.py`` has a ``main()`` that measures ztid next to a reference in the
same run and prints the ratio; nothing here asserts timings.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path


def _areas() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    # gRPC core logs INFO lines (GOAWAY on shutdown, fork handlers) that would interleave with the figures.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    wanted = argv or _areas()
    unknown = [a for a in wanted if a not in _areas()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(_areas())}", file=sys.stderr)
        return 2
    failed = 0
    for area in wanted:
        print(f"\n=== bench {area} " + "=" * max(0, 60 - len(area)), flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"bench.bench_{area}").main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"bench {area} FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"--- {area}: {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
