"""``ztid demo``: run the ML-platform story on the embedded dev trust domain."""

from __future__ import annotations

import argparse

from ztid.cli._common import EXIT_USAGE
from ztid.errors import ZtidError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the ML-platform story on a throwaway dev trust domain")
    p.add_argument("--policy", help="policy file (default: ./policy.yaml, else the shipped one)")
    p.add_argument("--workdir", help="keep the demo's CA and SVIDs here instead of a temp dir")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    # The demo forks DataLoader workers while its in-process key service runs; gRPC core then logs an
    # INFO line about skipping fork handlers. Harmless here (a real keyd is its own process): keep it quiet.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from ztid.demo import run

    try:
        return run(policy_path=args.policy, workdir=args.workdir)
    except ZtidError as exc:
        print(f"ztid demo: {exc}")
        return EXIT_USAGE
