"""``ztid id``: check a SPIFFE ID against the SPIFFE-ID standard and show its parts."""

from __future__ import annotations

import argparse

from ztid.cli._common import EXIT_NO, EXIT_OK, add_json_flag, emit
from ztid.errors import IdentityError
from ztid.spiffeid import SpiffeId

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``id`` verb group."""
    group = subparsers.add_parser("id", help="SPIFFE IDs")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="check a SPIFFE ID (0 valid, 1 invalid)")
    check.add_argument("spiffe_id", metavar="ID", help="the SPIFFE ID, e.g. spiffe://ai-platform.example/ns/a/sa/training")
    add_json_flag(check)
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        sid = SpiffeId.parse(args.spiffe_id)
    except IdentityError as exc:
        emit(
            args,
            {"ok": False, "valid": False, "input": args.spiffe_id, "rule": exc.rule, "error": str(exc)},
            f"invalid: {exc}\n  rule: {exc.rule}",
        )
        return EXIT_NO
    segments = list(sid.segments)
    human = "\n".join(
        [
            f"valid SPIFFE ID: {sid}",
            f"  trust domain: {sid.trust_domain.name}",
            f"  path:         {sid.path or '(none: this is the trust domain ID, not usable in an X509-SVID)'}",
            f"  segments:     {', '.join(segments) if segments else '(none)'}",
        ]
    )
    emit(
        args,
        {"ok": True, "valid": True, "id": str(sid), "trust_domain": sid.trust_domain.name, "path": sid.path, "segments": segments},
        human,
    )
    return EXIT_OK
