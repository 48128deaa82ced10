"""``ztid ca``: a local development CA (init, issue X509-SVIDs, print the trust bundle)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

from ztid.cli._common import EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit, fail_usage
from ztid.devca import DevCA, write_file
from ztid.errors import ZtidError

__all__ = ["parse_duration", "register"]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1h30m``; anything else (or zero) ends with exit code 2."""
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        fail_usage(f"duration {text!r} is not like 1h, 30m, 90s, 2d or 1h30m")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    value = dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if value <= dt.timedelta(0):
        fail_usage(f"duration {text!r} must be positive")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ca`` verb group."""
    group = subparsers.add_parser("ca", help="local development CA")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    init = verbs.add_parser("init", help="create a CA in DIR (writes DIR/bundle.pem beside the keys)")
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--trust-domain", required=True, metavar="TD")
    init.add_argument("--intermediate", action="store_true", help="sign leaves with an intermediate CA")
    init.add_argument("--ttl", default="24h", help="CA lifetime (default 24h)")
    init.add_argument("--force", action="store_true", help="overwrite a CA already in DIR")
    add_json_flag(init)
    init.set_defaults(func=_init)

    issue = verbs.add_parser("issue", help="issue an X509-SVID: PREFIX.pem (chain, leaf first) and PREFIX.key (PKCS#8, 0600)")
    issue.add_argument("directory", metavar="DIR")
    issue.add_argument("spiffe_id", metavar="SPIFFE_ID")
    issue.add_argument("--ttl", default="1h", help="SVID lifetime (default 1h)")
    issue.add_argument("--out", metavar="PREFIX", help="output prefix (default ./svid)")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="add a DNS SAN (repeatable)")
    add_json_flag(issue)
    issue.set_defaults(func=_issue)

    bundle = verbs.add_parser("bundle", help="print the CA's trust bundle")
    bundle.add_argument("directory", metavar="DIR")
    bundle.add_argument("--format", choices=("pem", "jwks"), default="pem", help="pem (X.509 only) or jwks (SPIFFE bundle, with the JWT key)")
    add_json_flag(bundle)
    bundle.set_defaults(func=_bundle)


def _init(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.ttl)
    try:
        ca = DevCA.create(args.trust_domain, intermediate=args.intermediate, ttl=ttl)
        d = ca.save(args.directory, overwrite=args.force)
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    obj = {
        "ok": True,
        "trust_domain": ca.trust_domain.name,
        "directory": str(d),
        "bundle": str(d / "bundle.pem"),
        "spiffe_bundle": str(d / "bundle.json"),
        "intermediate": ca.intermediate is not None,
        "jwt_kid": ca.jwt_kid,
        "not_after": ca.root.not_valid_after_utc.isoformat(),
    }
    emit(args, obj, f"created dev CA for trust domain {ca.trust_domain.name} in {d}\n  trust bundle: {d / 'bundle.pem'} (give this to peers)\n  valid until:  {obj['not_after']}")
    return EXIT_OK


def _issue(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.ttl)
    prefix = Path(args.out or "svid")
    try:
        ca = DevCA.load(args.directory)
        svid = ca.issue(args.spiffe_id, ttl=ttl, dns_names=args.dns)
        if prefix.parent and not prefix.parent.is_dir():
            fail_usage(f"directory of --out {str(prefix)!r} does not exist")
        cert_path, key_path = Path(f"{prefix}.pem"), Path(f"{prefix}.key")
        write_file(cert_path, svid.chain_pem(), secret=False)
        write_file(key_path, svid.key_pem(), secret=True)
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    except OSError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    obj = {
        "ok": True,
        "spiffe_id": str(svid.spiffe_id),
        "certificate": str(cert_path),
        "key": str(key_path),
        "not_after": svid.not_after.isoformat(),
        "chain_length": len(svid.cert_chain),
    }
    emit(args, obj, f"issued X509-SVID {svid.spiffe_id}\n  chain: {cert_path}\n  key:   {key_path} (0600)\n  valid until: {obj['not_after']}")
    return EXIT_OK


def _bundle(args: argparse.Namespace) -> int:
    try:
        ca = DevCA.load(args.directory)
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    b = ca.bundle()
    text = (b.to_pem() if args.format == "pem" else b.to_jwks()).decode("ascii")
    emit(args, {"ok": True, "trust_domain": ca.trust_domain.name, "format": args.format, "bundle": text}, text)
    return EXIT_OK
