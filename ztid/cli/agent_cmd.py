"""``ztid agent``: run the local dev Workload API server (a stand-in for SPIRE on one machine)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from ztid.cli._common import EXIT_OK, EXIT_USAGE, error_exit
from ztid.cli.ca_cmd import parse_duration
from ztid.errors import ZtidError

__all__ = ["register"]

log = logging.getLogger("ztid.agent")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``agent`` command."""
    p = subparsers.add_parser(
        "agent",
        help="serve the SPIFFE Workload API on a unix socket from a dev CA",
        description="Serve the SPIFFE Workload API on a unix socket, issuing SVIDs from the dev CA in DIR. "
        "SIGHUP re-reads DIR (bundle.pem, federation/) and the selector file; SIGTERM/SIGINT stop. "
        "See docs/dev-agent.md.",
    )
    p.add_argument("--dir", required=True, metavar="DIR", help="CA directory (ztid ca init)")
    p.add_argument("--socket", required=True, metavar="PATH", help="unix socket to listen on")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", metavar="SPIFFE_ID", help="serve this one identity to every local caller")
    who.add_argument("--selectors", metavar="FILE", help="YAML entries matched against callers' uid/gid/pid/exe")
    p.add_argument("--dns", action="append", default=[], metavar="NAME",
                   help="DNS SAN for the --id SVIDs (gRPC clients check one on servers); repeatable")
    p.add_argument("--ttl", default="1h", help="X509-SVID lifetime; rotated at half-life (default 1h)")
    p.add_argument("--rotate-every", metavar="DURATION", help="rotate at least this often (demos, tests)")
    p.add_argument("--jwt-ttl", default="5m", help="JWT-SVID lifetime (default 5m)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout once serving")
    p.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ztid.agent import DevAgent

    ttl = parse_duration(args.ttl)
    rotate = parse_duration(args.rotate_every) if args.rotate_every else None
    jwt_ttl = parse_duration(args.jwt_ttl)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ztid agent: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        agent = DevAgent(args.dir, args.socket, spiffe_id=args.id, selectors=args.selectors,
                         ttl=ttl, rotate_every=rotate, jwt_ttl=jwt_ttl, dns_names=tuple(args.dns)).start()
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)

    wake = threading.Event()
    pending: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        pending.append(signum)
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    ready = {"ok": True, "endpoint": agent.endpoint, "trust_domain": agent.state.trust_domain.name, "pid": os.getpid()}
    if args.json:
        sys.stdout.write(json.dumps(ready, sort_keys=True) + "\n")
    else:
        sys.stdout.write(f"serving the Workload API for {ready['trust_domain']} at {agent.endpoint}\n"
                         f"export SPIFFE_ENDPOINT_SOCKET={agent.endpoint}\n")
    sys.stdout.flush()
    try:
        while True:
            if not wake.wait(1.0):
                continue
            wake.clear()
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGHUP:
                    try:
                        agent.reload()
                    except ZtidError as exc:
                        log.error("reload failed, still serving the previous state: %s", exc)
                else:
                    return EXIT_OK
    finally:
        agent.stop()
