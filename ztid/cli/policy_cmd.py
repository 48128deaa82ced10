"""``ztid policy``: lint a policy file, ask it for a decision, explain one, show the matrix."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit
from ztid.errors import IdentityError, PolicyError
from ztid.policy import Policy, load_policy
from ztid.spiffeid import SpiffeId

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``policy`` verb group."""
    group = subparsers.add_parser("policy", help="policy files: lint, decide, explain, show")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    lint = verbs.add_parser("lint", help="validate a policy file (0 ok, 2 broken, with the located error)")
    lint.add_argument("file", metavar="FILE")
    add_json_flag(lint)
    lint.set_defaults(func=_lint)

    show = verbs.add_parser("show", help="print the identity templates and the allow/deny matrix")
    show.add_argument("file", metavar="FILE")
    add_json_flag(show)
    show.set_defaults(func=_show)

    for name, func, text in (
        ("decide", _decide, "decide one request (0 allowed, 1 denied, 2 broken policy)"),
        ("explain", _explain, "decide one request and show which template and rule decided, and why"),
    ):
        p = verbs.add_parser(name, help=text)
        p.add_argument("--policy", required=True, metavar="FILE", help="the policy file")
        p.add_argument("--source", required=True, metavar="ID", help="the caller's SPIFFE ID")
        p.add_argument("--target", required=True, metavar="COMPONENT",
                       help="the target component (or the target's SPIFFE ID, which also gives its tenant)")
        p.add_argument("--action", required=True, metavar="ACTION")
        p.add_argument("--target-tenant", metavar="TENANT", default=None, help="the target's tenant, when known")
        add_json_flag(p)
        p.set_defaults(func=func)


def _load(args: argparse.Namespace, path: str) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        emit(args, {"ok": False, "error": "policy", "message": str(exc), "location": exc.location, "detail": exc.detail},
             "")
        if not getattr(args, "json", False):
            print(f"ztid: broken policy: {exc}", file=sys.stderr)
        return None


def _lint(args: argparse.Namespace) -> int:
    policy = _load(args, args.file)
    if policy is None:
        return EXIT_USAGE
    rules = policy.rules()
    emit(args, {"ok": True, "file": args.file, "digest": policy.digest, "mode": policy.mode, "tenancy": policy.tenancy,
                "trust_domain": policy.trust_domain.name, "components": len(policy.components), "rules": len(rules)},
         f"{args.file}: ok ({len(policy.components)} components, {len(rules)} rules, mode {policy.mode}, "
         f"tenancy {policy.tenancy}, sha256 {policy.digest})")
    return EXIT_OK


def _target(text: str) -> Any:
    if text.startswith("spiffe://"):
        try:
            return SpiffeId.parse(text)
        except IdentityError:
            return text  # the policy denies it as an unknown target, with a reason
    return text


def _decide(args: argparse.Namespace) -> int:
    policy = _load(args, args.policy)
    if policy is None:
        return EXIT_USAGE
    d = policy.decide(args.source, _target(args.target), args.action, target_tenant=args.target_tenant)
    verdict = "allowed" if d.allowed else "denied"
    human = f"{verdict} ({d.code}): {d.reason}" + (f"\n  rule: {d.rule}" if d.rule else "")
    if d.would_deny:
        human += "\n  audit mode: enforce mode would deny"
    emit(args, {"ok": True, **d.to_dict()}, human)
    return EXIT_OK if d.allowed else EXIT_NO


def _explain(args: argparse.Namespace) -> int:
    policy = _load(args, args.policy)
    if policy is None:
        return EXIT_USAGE
    e = policy.explain(args.source, _target(args.target), args.action, target_tenant=args.target_tenant)
    lines = [f"policy {args.policy} (sha256 {policy.digest[:16]}…, mode {policy.mode}, tenancy {policy.tenancy})"]
    lines += [f"  {i}. {step}" for i, step in enumerate(e.steps, 1)]
    emit(args, {"ok": True, **e.to_dict()}, "\n".join(lines))
    return EXIT_OK if e.decision.allowed else EXIT_NO


def _show(args: argparse.Namespace) -> int:
    policy = _load(args, args.file)
    if policy is None:
        return EXIT_USAGE
    comps: dict[str, Any] = {}
    lines = [f"{args.file}: trust domain {policy.trust_domain.name}, mode {policy.mode}, tenancy {policy.tenancy}",
             f"sha256 {policy.digest}"]
    if policy.federation:
        lines.append("federation: " + ", ".join(f.trust_domain.name for f in policy.federation))
    lines.append("identities (first match wins):")
    lines += [f"  {i}. {t.text}" for i, t in enumerate(policy.identities, 1)]
    lines.append("matrix (anything unlisted is denied):")
    for c in policy.spec.components:
        comps[c.name] = {"allow": {r.target: sorted(r.actions) for r in c.allow}, "deny": [r.target for r in c.deny]}
        for r in c.allow:
            lines.append(f"  {c.name:<18} -> {r.target:<20} allow {', '.join(sorted(r.actions))}")
        for r in c.deny:
            lines.append(f"  {c.name:<18} -> {r.target:<20} DENY")
    emit(args, {"ok": True, "file": args.file, "digest": policy.digest, "mode": policy.mode, "tenancy": policy.tenancy,
                "trust_domain": policy.trust_domain.name,
                "federation": {f.trust_domain.name: f.bundle for f in policy.federation},
                "identities": [t.text for t in policy.identities], "actions": sorted(policy.actions),
                "components": comps}, "\n".join(lines))
    return EXIT_OK
