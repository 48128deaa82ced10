"""``ztid sign`` and ``ztid verify``: model signatures made with SVIDs, checked against bundles and policy.

Exit codes: ``sign`` 0 written, 1 refused (SVID not valid now, unsupported key type), 2 usage or
unreadable input; ``verify`` 0 valid and the signer is allowed, 1 invalid, unsigned or refused by the
policy, 2 usage, unreadable model/bundle or a broken policy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit
from ztid.errors import BundleError, PolicyError, SigningError, SourceError, SvidError, UsageError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sign`` and ``verify`` verbs."""
    sign = subparsers.add_parser(
        "sign", help="sign a model file or directory with an SVID (OpenSSF model-signing format)",
        description="Sign a model file or directory with the workload's X509-SVID. The signature is a "
                    "model-signing (Sigstore bundle) file that `model_signing verify certificate` also accepts. "
                    "Keys: EC P-256/P-384/P-521. Exit 0 signed, 1 refused, 2 usage/unreadable.")
    sign.add_argument("model", metavar="MODEL_PATH", help="model file or directory")
    sign.add_argument("--cert", metavar="CHAIN.pem", help="the SVID chain, leaf first")
    sign.add_argument("--key", metavar="KEY.pem", help="the SVID's private key (PEM, unencrypted)")
    sign.add_argument("--socket", metavar="ENDPOINT",
                      help="take the SVID from the SPIFFE Workload API (unix:///path) instead of --cert/--key")
    sign.add_argument("--out", metavar="SIG", help="signature file to write (default MODEL_PATH.sig)")
    sign.add_argument("--ignore", action="append", default=[], metavar="PATH",
                      help="directory-relative path to leave out of the signature (repeatable)")
    add_json_flag(sign)
    sign.set_defaults(func=_sign)

    verify = subparsers.add_parser(
        "verify", help="verify a model signature: chain, signing time, files and the policy's write decision",
        description="Verify a model signed with `ztid sign`: the signature and every file, the signer's chain "
                    "against its own trust domain's bundle at the signing time, and that the policy allows the "
                    "signer to ACTION the TARGET component. Exit 0 valid, 1 invalid/refused, 2 unreadable.")
    verify.add_argument("model", metavar="MODEL_PATH", help="model file or directory")
    verify.add_argument("--bundle", action="append", required=True, metavar="FILE",
                        help="trust bundle (PEM or SPIFFE bundle JSON); repeat per trust domain")
    verify.add_argument("--trust-domain", metavar="TD", help="trust domain of --bundle files that do not name it")
    verify.add_argument("--policy", required=True, metavar="FILE", help="policy.yaml")
    verify.add_argument("--target", default="registry", metavar="COMPONENT",
                        help="component the model is published to (default registry)")
    verify.add_argument("--action", default="write", metavar="ACTION", help="action the signer needs (default write)")
    verify.add_argument("--signature", metavar="SIG", help="signature file (default MODEL_PATH.sig)")
    add_json_flag(verify)
    verify.set_defaults(func=_verify)


def _signer(args: argparse.Namespace) -> Any:
    from ztid.svid import X509Svid

    if args.socket:
        if args.cert or args.key:
            raise UsageError("give either --socket or --cert/--key, not both")
        from ztid.source_workload import WorkloadApiSource

        with WorkloadApiSource(args.socket) as source:
            return source.snapshot().svid
    if not (args.cert and args.key):
        raise UsageError("give --cert CHAIN.pem and --key KEY.pem (or --socket ENDPOINT)")
    return X509Svid.load(args.cert, args.key)


def _sign(args: argparse.Namespace) -> int:
    from ztid.signing import sign_model

    if not Path(args.model).exists():
        return error_exit(args, UsageError(f"model {args.model!r} does not exist"), code=EXIT_USAGE)
    try:
        svid = _signer(args)
    except (UsageError, SvidError, SourceError) as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    try:
        signed = sign_model(args.model, svid, signature=args.out, ignore_paths=args.ignore)
    except SigningError as exc:
        return error_exit(args, exc, code=EXIT_NO, kind="refused")
    obj = {"ok": True, "signature": str(signed.signature), "signer": str(signed.signer),
           "signed_at": signed.signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "files": len(signed.digests)}
    emit(args, obj, f"signed {args.model} ({len(signed.digests)} file(s)) as {signed.signer}\n"
                    f"  signature: {signed.signature}\n  signed at: {obj['signed_at']}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from ztid.bundle import BundleSet
    from ztid.policy import load_policy
    from ztid.signing import verify_model

    if not Path(args.model).exists():
        return error_exit(args, UsageError(f"model {args.model!r} does not exist"), code=EXIT_USAGE)
    try:
        bundles = BundleSet.load(*args.bundle, trust_domain=args.trust_domain)
        policy = load_policy(args.policy)
    except (BundleError, PolicyError, UsageError) as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="bundle" if isinstance(exc, BundleError) else "policy")
    try:
        result = verify_model(args.model, signature=args.signature, bundles=bundles, policy=policy,
                              target=args.target, action=args.action)
    except SigningError as exc:
        emit(args, {"ok": False, "valid": False, "path": args.model, "error": str(exc)}, f"invalid: {exc}")
        return EXIT_NO
    obj = {"ok": result.allowed, **result.to_dict()}
    d = result.decision

    def human() -> str:
        head = "valid" if result.allowed else "refused"
        who = result.identity.component or "no component"
        return (f"{head}: {args.model} signed by {result.signer} ({who}) at {obj['signed_at']}\n"
                f"  policy: {'ALLOW' if d.allowed else 'deny'} {args.action} {args.target} [{d.code}] {d.reason}\n"
                f"  files: {len(result.digests)}, model digest sha256:{result.model_digest}")

    emit(args, obj, human)
    return EXIT_OK if result.allowed else EXIT_NO
