"""``ztid audit verify-log FILE --bundle ...``: check a decision log; 0 clean, 1 tampered, 2 unreadable."""

from __future__ import annotations

import argparse

from ztid.audit.log_verify import LogVerification, verify_log
from ztid.bundle import BundleSet
from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit
from ztid.errors import AuditError, BundleError, IdentityError
from ztid.spiffeid import SpiffeId

__all__ = ["register", "register_verify_log"]


def register_verify_log(audit_subparsers: argparse._SubParsersAction) -> None:
    """Add ``verify-log`` to the ``ztid audit`` group's subparsers."""
    p = audit_subparsers.add_parser(
        "verify-log", help="verify a decision log: 0 clean, 1 tampered (names the first bad line), 2 unreadable",
        description="Check a ztid decision log: the SHA-256 chain, the numbering, and every checkpoint's "
                    "signature against the bundle of its signer's own trust domain. Names the first bad line "
                    "and the kind of tampering (edit, deletion, insertion, reorder, truncation, "
                    "bad_signature, unknown_signer).",
    )
    p.add_argument("log", metavar="FILE", help="the decision log")
    p.add_argument("--bundle", action="append", required=True, metavar="FILE",
                   help="PEM or SPIFFE bundle (JSON) of the signer's trust domain; repeat per trust domain")
    p.add_argument("--trust-domain", metavar="TD", help="trust domain of --bundle files that do not name it")
    p.add_argument("--signer", metavar="SPIFFE_ID", help="require every checkpoint to be signed by this ID")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="a trusted copy of a checkpoint line (default FILE.checkpoint when it exists)")
    add_json_flag(p)
    p.set_defaults(func=_run)


register = register_verify_log  # the name ztid.cli.audit_cmd calls on its extension modules


def _human(r: LogVerification) -> str:
    signed = f"{r.checkpoints} signed checkpoint(s), {r.unsigned_tail} line(s) after the last one"
    if r.ok:
        who = ", ".join(r.signers) or "nobody"
        warn = "" if r.checkpoints else "\nwarning: no signed checkpoint: only the hash chain protects this log"
        return f"clean: {r.path}: {r.lines} lines, {r.decisions} decisions, {signed}; signed by {who}{warn}"
    return f"TAMPERED: {r.path}: line {r.first_bad_line}: {r.kind}: {r.detail}"


def _run(args: argparse.Namespace) -> int:
    try:
        signer = SpiffeId.parse(args.signer) if args.signer else None
    except IdentityError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="usage")
    try:
        bundles = BundleSet.load(*args.bundle, trust_domain=args.trust_domain)
    except BundleError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="bundle")
    try:
        result = verify_log(args.log, bundles, expect_signer=signer, checkpoint=args.checkpoint)
    except AuditError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="unreadable")
    emit(args, {"ok": result.ok, "tampered": not result.ok, **result.to_dict()}, _human(result))
    return EXIT_OK if result.ok else EXIT_NO
