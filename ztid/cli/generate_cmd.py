"""``ztid generate``: compile policy.yaml into other systems' policy (``ztid generate k8s``).

Exit codes: 0 written, 2 usage or a broken policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ztid.cli._common import EXIT_OK, EXIT_USAGE, error_exit
from ztid.errors import ZtidError

__all__ = ["register"]


def _cmd_k8s(args: argparse.Namespace) -> int:
    from ztid.generate.k8s import generate_k8s
    from ztid.policy import load_policy

    try:
        policy = load_policy(args.policy)
        out = generate_k8s(policy, namespaces=args.namespace, label=args.label, dns=not args.no_dns,
                           istio=not args.no_istio, cilium=args.cilium, ext_authz_provider=args.ext_authz_provider)
        written = out.write(args.out) if args.out else []
    except (ZtidError, OSError) as exc:
        return error_exit(args, exc, code=EXIT_USAGE)
    if args.json:
        sys.stdout.write(json.dumps({"ok": True, "objects": list(out.objects), "notes": list(out.notes),
                                     "written": [str(p) for p in written]}, sort_keys=True) + "\n")
    elif written:
        for path in written:
            print(f"wrote {path}")
        for note in out.notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        sys.stdout.write(out.to_yaml())
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``ztid generate k8s`` to the CLI."""
    group = subparsers.add_parser("generate", help="compile policy.yaml into cluster policy",
                                  description="Compile policy.yaml into other systems' policy.")
    sub = group.add_subparsers(dest="generate_cmd", metavar="TARGET", parser_class=type(group))
    k8s = sub.add_parser(
        "k8s", help="NetworkPolicies, Istio PeerAuthentication/AuthorizationPolicies, Cilium policies",
        description="Compile policy.yaml into default-deny NetworkPolicies plus the allowed component paths, "
                    "STRICT mTLS and Istio AuthorizationPolicies whose principals come from the identity "
                    "templates, and optionally CiliumNetworkPolicies. Pods are selected by the component label "
                    "and assumed to run under a service account named for their component.")
    k8s.add_argument("--policy", required=True, metavar="FILE", help="policy.yaml")
    k8s.add_argument("--namespace", "-n", action="append", metavar="NS",
                     help="tenant namespace (repeatable; default: namespaces written in the identity templates)")
    k8s.add_argument("--out", metavar="DIR", help="write DIR/<namespace>/{networkpolicies,istio,cilium}.yaml "
                                                  "instead of one YAML stream on stdout")
    k8s.add_argument("--label", default="app.kubernetes.io/component",
                     help="pod label holding the component name (default app.kubernetes.io/component)")
    k8s.add_argument("--cilium", action="store_true", help="also emit CiliumNetworkPolicies")
    k8s.add_argument("--no-istio", action="store_true", help="no Istio objects")
    k8s.add_argument("--no-dns", action="store_true", help="no DNS egress policy")
    k8s.add_argument("--ext-authz-provider", metavar="NAME",
                     help="add a CUSTOM AuthorizationPolicy sending every request to this Istio extension "
                          "provider (the ztid sidecar), which enforces actions")
    k8s.add_argument("--json", action="store_true", help="print one JSON object with the objects and notes")
    k8s.set_defaults(func=_cmd_k8s)

    def _no_target(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=_no_target)
