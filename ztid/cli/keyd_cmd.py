"""The ``ztid keyd``, ``seal-dataset`` and ``rewrap-dataset`` verbs: the key service and its dataset tools.

Exit codes: 0 done (or the service stopped cleanly); 1 the key service refused (policy deny,
expired SVID); 2 usage, unreadable input, a broken policy or keyring, or no SVID.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit
from ztid.errors import KeyReleaseError, ZtidError

__all__ = ["register"]


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cert", metavar="CHAIN.pem", help="this workload's SVID chain, leaf first (reloaded on change)")
    p.add_argument("--key", metavar="KEY.pem", help="the SVID's private key")
    p.add_argument("--bundle", action="append", metavar="FILE", help="trust bundle (PEM or SPIFFE JSON); repeatable")
    p.add_argument("--trust-domain", metavar="TD", help="trust domain of JSON --bundle files")
    p.add_argument("--workload-api", metavar="SOCKET", help="take the SVID and bundles from the SPIFFE Workload API instead")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keyd", required=True, metavar="ADDR", help="key service address (host:port or unix:PATH)")
    p.add_argument("--server-name", metavar="DNS", help="a DNS name in the key service's SVID (gRPC checks one)")
    _source_args(p)


def register(subparsers: Any) -> None:
    """Add ``keyd``, ``seal-dataset`` and ``rewrap-dataset`` to the ``ztid`` command."""
    p = subparsers.add_parser("keyd", help="run the key service: data keys only for SVIDs the policy allows",
                              description="Serve NewKey/WrapKey/UnwrapKey/RewrapKey over gRPC with mTLS. UnwrapKey needs "
                                          "`read` on the dataset's target, the others `write`; every answer is logged.")
    p.add_argument("--listen", default="127.0.0.1:7443", metavar="ADDR", help="host:port or unix:PATH (default 127.0.0.1:7443)")
    p.add_argument("--policy", required=True, metavar="FILE", help="policy.yaml (reloaded on change; last good kept)")
    p.add_argument("--keyring", required=True, metavar="FILE", help="KEK keyring (mode 0600; `ztid keyring init`)")
    p.add_argument("--log", required=True, metavar="FILE", help="decision log (every answer is a line)")
    p.add_argument("--datasets", metavar="FILE", help="dataset registry (default: datasets.json beside the keyring)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=TARGET[@TENANT]", help="register a dataset at start")
    p.add_argument("--max-lease", default="15m", metavar="DURATION", help="longest key lease (default 15m)")
    p.add_argument("--key-id", default="default", help="KEK id for new datasets (default: default)")
    p.add_argument("--no-register", action="store_true", help="refuse NewKey for datasets not registered by the operator")
    _source_args(p)
    add_json_flag(p)
    p.set_defaults(func=_keyd)

    p = subparsers.add_parser("seal-dataset", help="seal every file of a directory with one key from the key service")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--dataset", required=True, metavar="NAME")
    p.add_argument("--target", default="data-store", metavar="COMPONENT", help="policy component holding it (default data-store)")
    p.add_argument("--tenant", metavar="TENANT", help="the dataset's tenant, if any")
    p.add_argument("--out", metavar="DIR", help="output directory (default DIR.sealed)")
    p.add_argument("--segment-size", type=int, default=1 << 20, help="ciphertext segment size (default 1 MiB)")
    _client_args(p)
    add_json_flag(p)
    p.set_defaults(func=_seal_dataset)

    p = subparsers.add_parser("rewrap-dataset", help="rewrap a sealed dataset to the key service's newest KEK version")
    p.add_argument("directory", metavar="DIR")
    _client_args(p)
    add_json_flag(p)
    p.set_defaults(func=_rewrap_dataset)


def _source(args: argparse.Namespace) -> Any:
    from ztid.errors import UsageError

    if args.workload_api:
        if args.cert or args.key:
            raise UsageError("give either --workload-api or --cert/--key/--bundle, not both")
        from ztid.source_workload import WorkloadApiSource

        return WorkloadApiSource(args.workload_api)
    if not (args.cert and args.key and args.bundle):
        raise UsageError("give --cert CHAIN.pem --key KEY.pem --bundle FILE (or --workload-api SOCKET)")
    from ztid.source_files import FileSource

    return FileSource(args.cert, args.key, args.bundle, trust_domain=args.trust_domain)


def _keyd(args: argparse.Namespace) -> int:
    from ztid.audit.decisions import DecisionLog
    from ztid.cli.ca_cmd import parse_duration
    from ztid.crypto.keys import Keyring
    from ztid.keyd.datasets import DatasetRegistry, parse_dataset_spec
    from ztid.keyd.server import serve
    from ztid.keyd.service import KeyService
    from ztid.policy.watch import PolicyWatcher

    max_lease = parse_duration(args.max_lease)
    try:
        watcher = PolicyWatcher(args.policy)
        keyring = Keyring.load(args.keyring)
        records = tuple(parse_dataset_spec(s, key_id=args.key_id) for s in args.dataset)
        registry = DatasetRegistry(args.datasets or os.path.join(os.path.dirname(os.path.abspath(args.keyring)), "datasets.json"),
                                   records=records)
        source = _source(args)
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="config")
    try:
        log = DecisionLog(args.log, signer=lambda: source.snapshot().svid)
    except ZtidError as exc:
        source.close()
        return error_exit(args, exc, code=EXIT_USAGE, kind="config")
    service = KeyService(policy=watcher, backend=keyring, log=log, registry=registry, max_lease=max_lease,
                         key_id=args.key_id, register_on_new=not args.no_register)
    try:
        server = serve(args.listen, service=service, source=source)
    except ZtidError as exc:
        log.close()
        source.close()
        return error_exit(args, exc, code=EXIT_USAGE, kind="config")
    watcher.start()
    emit(args, {"ok": True, "listen": server.target, "policy_digest": watcher.current.digest, "max_lease_seconds":
                max_lease.total_seconds(), "datasets": len(registry), "spiffe_id": str(source.snapshot().svid.spiffe_id)},
         f"ztid keyd: listening on {server.target} as {source.snapshot().svid.spiffe_id} "
         f"(policy {watcher.current.digest[:12]}, max lease {max_lease})")
    sys.stdout.flush()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=2)
        watcher.stop()
        log.close()
        source.close()
    return EXIT_OK


class _Progress:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream if stream.isatty() else None

    def __call__(self, done: int, total: int, name: str) -> None:
        if self._stream is None:
            return
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        self._stream.write(f"\r[{bar:<30}] {frac:6.1%} {done / 2**20:8.1f}/{total / 2**20:.1f} MiB  {name[-40:]:<40}")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


def _with_client(args: argparse.Namespace, fn: Any) -> int:
    from ztid.keyd.client import KeyClient

    try:
        source = _source(args)
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    try:
        with KeyClient(args.keyd, source=source, server_name=args.server_name) as client:
            return fn(client)
    except KeyReleaseError as exc:
        return error_exit(args, exc, code=EXIT_NO, kind="refused")
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    finally:
        source.close()


def _seal_dataset(args: argparse.Namespace) -> int:
    from ztid.crypto.dataset import seal_dataset

    out = args.out or args.directory.rstrip("/") + ".sealed"

    def go(client: Any) -> int:
        report = seal_dataset(args.directory, out, dataset=args.dataset, target=args.target, tenant=args.tenant,
                              key_client=client, segment_size=args.segment_size, progress=_Progress(sys.stderr))
        emit(args, {"ok": True, "dataset": report.dataset, "out": out, "files": len(report.files), "bytes": report.bytes_in,
                    "key_id": report.key_id, "key_version": report.key_version, "decision_id": report.decision_id},
             f"sealed {len(report.files)} files ({report.bytes_in} bytes) of dataset {report.dataset!r} into {out} "
             f"(key {report.key_id} v{report.key_version})")
        return EXIT_OK

    return _with_client(args, go)


def _rewrap_dataset(args: argparse.Namespace) -> int:
    from ztid.crypto.dataset import rewrap_dataset

    def go(client: Any) -> int:
        headers = rewrap_dataset(args.directory, key_client=client)
        versions = sorted({h.key_version for h in headers})
        emit(args, {"ok": True, "files": len(headers), "key_versions": versions},
             f"rewrapped {len(headers)} files; key versions now {versions}")
        return EXIT_OK

    return _with_client(args, go)
