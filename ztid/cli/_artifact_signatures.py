"""The ``ztid audit artifacts`` signature hook: verify recorded ztid model signatures (bundle + policy).

``ztid.cli.audit_cmd`` imports this module when it exists: :func:`add_arguments` adds ``--bundle``,
``--trust-domain``, ``--policy`` and ``--target`` to ``ztid audit artifacts``; :func:`verifier` turns
them into a :class:`ztid.audit.artifacts.SignatureCheck`. Without ``--bundle``/``--policy`` the audit
reports recorded signatures as present but not verified (ZT-ART-008).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ztid.audit.artifacts import SignatureCheck, SignatureVerdict
from ztid.bundle import BundleSet
from ztid.errors import SigningError, UsageError
from ztid.policy import Policy

__all__ = ["add_arguments", "signature_check", "verifier"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that configure signature verification to ``ztid audit artifacts``."""
    parser.add_argument("--bundle", action="append", default=None, metavar="FILE",
                        help="verify recorded ztid signatures against these trust bundles (needs --policy)")
    parser.add_argument("--trust-domain", default=None, metavar="TD", help="trust domain of --bundle files that do not name it")
    parser.add_argument("--policy", default=None, metavar="FILE",
                        help="policy.yaml deciding who may publish the artifacts (needs --bundle)")
    parser.add_argument("--target", default="registry", metavar="COMPONENT",
                        help="component the signer must be allowed to write (default registry)")


def _locate(artifact: Path, signature: str, run_dir: Path) -> Path | None:
    """The recorded signature file: relative to the artifact's directory, then to each parent up to the run."""
    root = run_dir.resolve()
    if Path(signature).is_absolute():
        candidates = [Path(signature)]
    else:
        start = artifact.resolve().parent
        bases = [start, *(p for p in start.parents if p == root or root in p.parents)]
        candidates = [b / signature for b in bases]
    for cand in candidates:
        resolved = cand.resolve()
        if (resolved == root or root in resolved.parents) and resolved.is_file():
            return resolved
    return None


def signature_check(bundles: BundleSet, policy: Policy, *, target: str = "registry") -> SignatureCheck:
    """A SignatureCheck that verifies each recorded signature with :func:`ztid.signing.verify_model`."""
    from ztid.signing import verify_model

    def check(artifact: Path, signature: str, *, entry: Mapping[str, Any], run_dir: Path) -> SignatureVerdict:
        sig = _locate(artifact, signature, run_dir)
        if sig is None:
            return SignatureVerdict(False, f"signature file {signature!r} not found inside the run directory")
        try:
            result = verify_model(artifact, signature=sig, bundles=bundles, policy=policy, target=target)
        except (SigningError, UsageError) as exc:
            return SignatureVerdict(False, str(exc))
        if not result.allowed:
            d = result.decision
            return SignatureVerdict(False, f"signer {result.signer} may not write {target!r} [{d.code}]: {d.reason}",
                                    str(result.signer))
        return SignatureVerdict(True, f"signed by {result.signer} at {result.signed_at.isoformat()}", str(result.signer))

    return check


def verifier(args: argparse.Namespace) -> SignatureCheck | None:
    """The check configured by the command line, or None when no --bundle/--policy was given.

    Raises:
        UsageError: only one of --bundle and --policy.
        BundleError: a bundle is unreadable.
        PolicyError: the policy is broken.
    """
    bundle_files, policy_file = getattr(args, "bundle", None), getattr(args, "policy", None)
    if not bundle_files and not policy_file:
        return None
    if not bundle_files or not policy_file:
        raise UsageError("verifying artifact signatures needs both --bundle and --policy")
    from ztid.policy import load_policy

    bundles = BundleSet.load(*bundle_files, trust_domain=args.trust_domain)
    return signature_check(bundles, load_policy(policy_file), target=args.target)
