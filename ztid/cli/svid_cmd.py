"""``ztid svid``: verify a peer X509-SVID chain against trust bundles, or inspect one."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from cryptography import x509

from ztid.bundle import BundleSet
from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit, fail_usage, read_bytes
from ztid.errors import BundleError, SvidError, UsageError
from ztid.svid import parse_chain, spiffe_id_from_leaf, verify_x509_svid

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``svid`` verb group."""
    group = subparsers.add_parser("svid", help="X509-SVIDs")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    verify = verbs.add_parser("verify", help="verify a chain (leaf first) against bundles: 0 valid, 1 invalid, 2 unreadable")
    verify.add_argument("chain", metavar="CHAIN.pem", help="PEM chain, leaf first ('-' for stdin)")
    verify.add_argument("--bundle", action="append", required=True, metavar="FILE", help="PEM or SPIFFE bundle (JSON); repeat per trust domain")
    verify.add_argument("--trust-domain", metavar="TD", help="trust domain of the --bundle file(s) when they do not name it")
    verify.add_argument("--at", metavar="RFC3339", help="validation time, e.g. 2026-01-01T00:00:00Z (default now)")
    add_json_flag(verify)
    verify.set_defaults(func=_verify)

    inspect = verbs.add_parser("inspect", help="show the certificates of a chain and whether the leaf obeys the SVID rules")
    inspect.add_argument("chain", metavar="CHAIN.pem", help="PEM chain, leaf first ('-' for stdin)")
    add_json_flag(inspect)
    inspect.set_defaults(func=_inspect)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``); anything else ends with exit code 2."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        fail_usage(f"--at {text!r} is not an RFC 3339 timestamp (e.g. 2026-01-01T00:00:00Z)")
    if when.tzinfo is None:
        fail_usage(f"--at {text!r} needs a UTC offset (append Z for UTC)")
    return when


def _verify(args: argparse.Namespace) -> int:
    at = parse_time(args.at) if args.at else None
    data = read_bytes(args.chain, "chain")
    try:
        bundles = BundleSet.load(*args.bundle, trust_domain=args.trust_domain)
    except BundleError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="bundle")
    try:
        result = verify_x509_svid(data, bundles, at=at)
    except SvidError as exc:
        rule = getattr(exc, "rule", "")
        if rule == "parse":
            return error_exit(args, exc, code=EXIT_USAGE, kind="unreadable chain")
        emit(args, {"ok": False, "valid": False, "rule": rule, "error": str(exc), "chain": args.chain}, f"invalid: {exc}")
        return EXIT_NO
    except UsageError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    obj = {
        "ok": True,
        "valid": True,
        "spiffe_id": str(result.spiffe_id),
        "trust_domain": result.spiffe_id.trust_domain.name,
        "not_after": result.not_after.isoformat(),
        "chain_length": len(result.chain),
    }
    emit(args, obj, f"valid X509-SVID: {result.spiffe_id}\n  trust domain: {result.spiffe_id.trust_domain.name}\n  valid until:  {result.not_after.isoformat()}")
    return EXIT_OK


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    def ext(cls: type) -> Any:
        try:
            return cert.extensions.get_extension_for_class(cls).value
        except (x509.ExtensionNotFound, ValueError):
            return None

    san, bc, ku, eku = ext(x509.SubjectAlternativeName), ext(x509.BasicConstraints), ext(x509.KeyUsage), ext(x509.ExtendedKeyUsage)
    usages = []
    if ku is not None:
        for name in ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"):
            if getattr(ku, name):
                usages.append(name)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "uris": san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else [],
        "dns": san.get_values_for_type(x509.DNSName) if san is not None else [],
        "ca": None if bc is None else bc.ca,
        "key_usage": None if ku is None else usages,
        "extended_key_usage": None if eku is None else [getattr(o, "_name", o.dotted_string) for o in eku],
    }


def _inspect(args: argparse.Namespace) -> int:
    data = read_bytes(args.chain, "chain")
    try:
        certs = parse_chain(data)
    except SvidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="unreadable chain")
    described = [_describe(c) for c in certs]
    try:
        leaf: dict[str, Any] = {"spiffe_id": str(spiffe_id_from_leaf(certs[0])), "leaf_rules": "ok"}
    except SvidError as exc:
        leaf = {"spiffe_id": None, "leaf_rules": str(exc), "rule": getattr(exc, "rule", "")}

    def human() -> str:
        lines = [f"leaf SPIFFE ID: {leaf['spiffe_id'] or '-'} (leaf rules: {leaf['leaf_rules']})"]
        for i, d in enumerate(described):
            lines.append(f"[{i}] {'leaf' if i == 0 else 'signing certificate'}")
            for key in ("subject", "issuer", "not_before", "not_after", "uris", "dns", "ca", "key_usage", "extended_key_usage"):
                lines.append(f"    {key + ':':20}{d[key]}")
        return "\n".join(lines)

    emit(args, {"ok": True, **leaf, "certificates": described}, human)
    return EXIT_OK
