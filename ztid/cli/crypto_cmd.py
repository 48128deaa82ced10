"""The ``ztid seal``, ``open``, ``rewrap`` and ``keyring`` verbs: sealed files against a local keyring.

Exit codes: 0 done; 1 a sealed file is invalid or does not decrypt; 2 usage, unreadable input or an
unusable keyring (missing, loose permissions, unknown or archived key version).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ztid._atomic import atomic_file
from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit
from ztid.errors import CryptoError, DecryptionError, KeyringError, UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``seal``, ``open``, ``rewrap`` and ``keyring`` to the ``ztid`` command."""
    p = subparsers.add_parser("seal", help="encrypt a file into a sealed file (fresh data key, wrapped by the keyring)")
    p.add_argument("src", help="plaintext file")
    p.add_argument("dst", help="sealed file to write (atomically)")
    p.add_argument("--keyring", required=True, help="keyring file (JSON, mode 0600)")
    p.add_argument("--key-id", default="default", help="KEK id in the keyring (default: default)")
    p.add_argument("--dataset", required=True, help="dataset id, bound into the file")
    p.add_argument("--name", help="file name within the dataset (default: the source's base name)")
    p.add_argument("--segment-size", type=int, default=1 << 20, help="ciphertext segment size (default 1 MiB)")
    add_json_flag(p)
    p.set_defaults(func=_seal)

    p = subparsers.add_parser("open", help="decrypt a sealed file (verified) to a file or stdout")
    p.add_argument("sealed", help="sealed file")
    p.add_argument("-o", "--output", default="-", help="plaintext output file, '-' for stdout (default)")
    p.add_argument("--keyring", required=True, help="keyring file")
    p.add_argument("--dataset", help="refuse unless the file belongs to this dataset")
    p.add_argument("--name", help="refuse unless the file has this name in its dataset")
    add_json_flag(p)
    p.set_defaults(func=_open)

    p = subparsers.add_parser("rewrap", help="rewrap sealed files' data keys to the newest KEK version")
    p.add_argument("sealed", nargs="+", help="sealed files (rewritten atomically; stream bytes unchanged)")
    p.add_argument("--keyring", required=True, help="keyring file")
    add_json_flag(p)
    p.set_defaults(func=_rewrap)

    p = subparsers.add_parser("keyring", help="manage a local keyring of key-encryption keys")
    sub = p.add_subparsers(dest="keyring_verb", metavar="VERB", required=True)
    q = sub.add_parser("init", help="create a keyring file (0600) with version 1 of each key id")
    q.add_argument("path")
    q.add_argument("--key-id", action="append", dest="key_ids", help="key id to create (repeatable; default: default)")
    add_json_flag(q)
    q.set_defaults(func=_keyring_init)
    q = sub.add_parser("rotate", help="add a new newest version of a key id")
    q.add_argument("path")
    q.add_argument("key_id", nargs="?", default="default")
    add_json_flag(q)
    q.set_defaults(func=_keyring_rotate)
    q = sub.add_parser("set-min-version", help="archive every version below VERSION (rewrap first)")
    q.add_argument("path")
    q.add_argument("key_id")
    q.add_argument("version", type=int)
    add_json_flag(q)
    q.set_defaults(func=_keyring_min)
    q = sub.add_parser("show", help="list key ids and versions (never key material)")
    q.add_argument("path")
    add_json_flag(q)
    q.set_defaults(func=_keyring_show)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    if isinstance(exc, DecryptionError):
        return error_exit(args, exc, code=EXIT_NO, kind="invalid")
    if isinstance(exc, (KeyringError, UsageError)) or not isinstance(exc, CryptoError):
        return error_exit(args, exc, code=EXIT_USAGE)
    return error_exit(args, exc, code=EXIT_NO, kind="invalid")


def _seal(args: argparse.Namespace) -> int:
    from ztid.crypto import keys, sealed

    name = args.name or Path(args.src).name
    try:  # check the names before a key is wrapped for them; every failure here is a usage error
        sealed.SealedHeader.new(dataset=args.dataset, name=name, key_id=args.key_id, key_version=1,
                                wrapped_key=b"-", segment_size=args.segment_size)
        ring = keys.Keyring.load(args.keyring)
        dek = keys.new_data_key()
        version, wrapped = ring.wrap(args.key_id, dek, context=keys.dek_context(args.dataset))
        header = sealed.seal_file(args.src, args.dst, data_key=dek, wrapped_key=wrapped, dataset=args.dataset,
                                  name=name, key_id=args.key_id, key_version=version, segment_size=args.segment_size)
    except (CryptoError, UsageError) as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    obj = {"ok": True, "path": args.dst, "dataset": header.dataset, "name": header.name, "key_id": header.key_id,
           "key_version": header.key_version, "segment_size": header.segment_size}
    emit(args, obj, f"sealed {args.src} -> {args.dst} ({header.dataset}/{header.name}, "
                    f"key {header.key_id} v{header.key_version})")
    return EXIT_OK


def _open(args: argparse.Namespace) -> int:
    from ztid.crypto import keys, sealed

    try:
        with open(args.sealed, "rb") as f:
            header = sealed.read_header(f)
        ring = keys.Keyring.load(args.keyring)
        dek = ring.unwrap(header.key_id, header.key_version, header.wrapped_key,
                          context=keys.dek_context(header.dataset))
        reader = sealed.open_sealed(args.sealed, dek, dataset=args.dataset, name=args.name)
    except OSError as exc:
        return error_exit(args, UsageError(f"cannot read {args.sealed!r}: {exc.strerror or exc}"))
    except (CryptoError, UsageError) as exc:
        return _fail(args, exc)
    with reader:
        try:
            written = _copy_out(reader, args.output)
        except (CryptoError, UsageError) as exc:
            return _fail(args, exc)
    obj = {"ok": True, "dataset": header.dataset, "name": header.name, "bytes": written, "output": args.output}
    emit(args, obj, "" if args.output == "-" else f"opened {args.sealed} -> {args.output} ({written} bytes)")
    return EXIT_OK


def _copy_out(reader: Any, output: str) -> int:
    """Copy verified plaintext out; a file output appears (atomically) only once all of it verified."""
    buf = memoryview(bytearray(1 << 20))
    total = 0
    if output == "-":
        sink = sys.stdout.buffer
        while n := reader.readinto(buf):
            sink.write(buf[:n])
            total += n
        sink.flush()
        return total
    try:
        with atomic_file(output, mode=0o600) as out:  # plaintext: private until its owner says otherwise
            while n := reader.readinto(buf):
                out.write(buf[:n])
                total += n
    except OSError as exc:
        raise UsageError(f"cannot write {output!r}: {exc.strerror or exc}") from exc
    return total


def _rewrap(args: argparse.Namespace) -> int:
    from ztid.crypto import keys, sealed

    results = []
    try:
        ring = keys.Keyring.load(args.keyring)
        for path in args.sealed:
            header = sealed.rewrap_file(path, ring)
            results.append({"path": path, "key_id": header.key_id, "key_version": header.key_version})
    except (CryptoError, UsageError) as exc:
        return _fail(args, exc)
    emit(args, {"ok": True, "files": results},
         lambda: "\n".join(f"{r['path']}: {r['key_id']} v{r['key_version']}" for r in results))
    return EXIT_OK


def _keyring_init(args: argparse.Namespace) -> int:
    from ztid.crypto.keys import Keyring

    try:
        ring = Keyring.create(args.path, key_ids=tuple(args.key_ids or ("default",)))
    except KeyringError as exc:
        return _fail(args, exc)
    emit(args, {"ok": True, "path": args.path, "key_ids": list(ring.key_ids)},
         f"created keyring {args.path} ({', '.join(ring.key_ids)})")
    return EXIT_OK


def _keyring_rotate(args: argparse.Namespace) -> int:
    from ztid.crypto.keys import Keyring

    try:
        version = Keyring.load(args.path).rotate(args.key_id)
    except KeyringError as exc:
        return _fail(args, exc)
    emit(args, {"ok": True, "key_id": args.key_id, "version": version}, f"{args.key_id}: now version {version}")
    return EXIT_OK


def _keyring_min(args: argparse.Namespace) -> int:
    from ztid.crypto.keys import Keyring

    try:
        Keyring.load(args.path).set_min_decrypt_version(args.key_id, args.version)
    except KeyringError as exc:
        return _fail(args, exc)
    emit(args, {"ok": True, "key_id": args.key_id, "min_decrypt_version": args.version},
         f"{args.key_id}: versions below {args.version} archived")
    return EXIT_OK


def _keyring_show(args: argparse.Namespace) -> int:
    from ztid.crypto.keys import Keyring

    try:
        ring = Keyring.load(args.path)
    except KeyringError as exc:
        return _fail(args, exc)
    keys_info = {k: {"versions": list(ring.versions(k)), "primary": ring.primary_version(k),
                     "min_decrypt_version": ring.min_decrypt_version(k)} for k in ring.key_ids}
    emit(args, {"ok": True, "keys": keys_info},
         lambda: "\n".join(f"{k}: versions {v['versions']}, primary {v['primary']}, "
                           f"min_decrypt {v['min_decrypt_version']}" for k, v in keys_info.items()))
    return EXIT_OK
