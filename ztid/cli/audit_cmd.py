"""``ztid audit``: the Kubernetes zero-trust audit and the pipeline artifact audit.

Exit codes: 0 no finding at or above ``--fail-on`` (default ``high``), 1 such findings exist,
2 usage, unreadable or malformed input, broken policy. The table, ``--format json`` (one object
with a ``findings`` list and a ``summary``) and ``--format sarif`` come from one result set.

Extension points (modules that may not exist yet; each is optional):

* ``ztid.cli._verify_log``: ``register(subparsers)`` is called with this group's subparsers
  (``ztid audit verify-log``).
* ``ztid.cli._artifact_signatures``: ``add_arguments(parser)`` adds options to ``ztid audit artifacts``
  and ``verifier(args)`` returns a :class:`ztid.audit.artifacts.SignatureCheck` (or ``None``) that
  verifies the signatures recorded in the run (e.g. ztid model signatures against a policy and bundle).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ztid.audit.findings import Report, Severity
from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, error_exit
from ztid.errors import UsageError, ZtidError

__all__ = ["register"]

_SEVERITIES = ("critical", "high", "medium", "low", "info", "none")
_EXTENSIONS = ("ztid.cli._verify_log",)
_SIGNATURE_HOOK = "ztid.cli._artifact_signatures"


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "sarif"), default=None,
                   help="output format (default table)")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--fail-on", choices=_SEVERITIES, default="high", metavar="SEVERITY",
                   help="exit 1 when a finding at or above this severity exists: "
                        "critical|high|medium|low|info|none (default high)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")


def _format(args: argparse.Namespace) -> str:
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json conflicts with --format {args.format}")
    return "json" if args.json else (args.format or "table")


def _threshold(args: argparse.Namespace) -> Severity | None:
    return None if args.fail_on == "none" else Severity.parse(args.fail_on)


def _write(args: argparse.Namespace, text: str) -> None:
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def render(report: Report, fmt: str, fail_on: Severity | None) -> str:
    """The report as text in ``fmt`` (``table``, ``json``, ``sarif``), newline-terminated."""
    if fmt == "json":
        return json.dumps(report.to_dict(fail_on=fail_on), sort_keys=True) + "\n"
    if fmt == "sarif":
        from ztid.audit.sarif import to_sarif

        return json.dumps(to_sarif(report), indent=2, sort_keys=True) + "\n"
    return report.render_table(fail_on=fail_on) + "\n"


def _finish(args: argparse.Namespace, report: Report) -> int:
    fmt, fail_on = _format(args), _threshold(args)
    try:
        _write(args, render(report, fmt, fail_on))
    except OSError as exc:
        return _error(args, exc)
    return EXIT_NO if report.at_or_above(fail_on) else EXIT_OK


def _error(args: argparse.Namespace, exc: BaseException) -> int:
    args.json = getattr(args, "json", False) or getattr(args, "format", None) == "json"
    return error_exit(args, exc, code=EXIT_USAGE)


def _load_policy(path: str | None) -> Any:
    if path is None:
        return None
    from ztid.policy import load_policy

    return load_policy(path)


def _cmd_k8s(args: argparse.Namespace) -> int:
    from ztid.audit.k8s import audit_k8s

    try:
        _format(args)
        if not args.paths and not args.live:
            raise UsageError("give manifest PATHS (files, directories, '-' for stdin) or --live")
        gpu = None if args.gpu_namespaces is None else {n.strip() for n in args.gpu_namespaces.split(",") if n.strip()}
        report = audit_k8s(args.paths, live=args.live, policy=_load_policy(args.policy), namespace=args.namespace,
                           exclude_namespaces=args.exclude_namespace, gpu_namespaces=gpu, kubectl=args.kubectl,
                           context=args.context)
    except (ZtidError, OSError) as exc:
        return _error(args, exc)
    return _finish(args, report)


def _cmd_artifacts(args: argparse.Namespace) -> int:
    from ztid.audit.artifacts import audit_artifacts

    try:
        _format(args)
        hook = _optional(_SIGNATURE_HOOK)
        verifier = hook.verifier(args) if hook is not None else None
        report = audit_artifacts(args.run_dir, verify_signature=verifier)
    except (ZtidError, OSError) as exc:
        return _error(args, exc)
    return _finish(args, report)


def register(subparsers: Any) -> None:
    """Add ``ztid audit k8s|artifacts`` (and any extension subcommands) to the CLI."""
    group = subparsers.add_parser("audit", help="audit a cluster's zero-trust posture, a pipeline run, a log",
                                  description="Audit a cluster's zero-trust posture (k8s) or a pipeline run "
                                              "(artifacts). Exit 0 clean, 1 findings at or above --fail-on, "
                                              "2 unreadable input.")
    sub = group.add_subparsers(dest="audit_cmd", metavar="AUDIT", parser_class=type(group))

    k8s = sub.add_parser("k8s", help="audit Kubernetes manifests or a live cluster",
                         description="Audit Kubernetes manifests (YAML, kubectl get -o json dumps) or, with --live, "
                                     "the cluster kubectl points at. Check IDs: docs/audit.md.")
    k8s.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories ('-' for stdin)")
    k8s.add_argument("--live", action="store_true", help="also read the cluster through kubectl")
    k8s.add_argument("--kubectl", default="kubectl", metavar="EXE", help="kubectl executable (default kubectl)")
    k8s.add_argument("--context", default=None, help="kubeconfig context for --live")
    k8s.add_argument("--namespace", "-n", default=None, help="audit only this namespace")
    k8s.add_argument("--exclude-namespace", action="append", default=[], metavar="NS",
                     help="leave this namespace out (repeatable)")
    k8s.add_argument("--policy", default=None, metavar="FILE",
                     help="policy.yaml: enables the identity (ZT-K8S-016) and GPU namespace (ZT-K8S-017) checks")
    k8s.add_argument("--gpu-namespaces", default=None, metavar="NS,...",
                     help="with --policy: GPUs are allowed only in these namespaces")
    _add_output_options(k8s)
    k8s.set_defaults(func=_cmd_k8s)

    art = sub.add_parser("artifacts", help="audit a pipeline run directory",
                         description="Check a pipeline run directory: output artifacts without a hash or signature, "
                                     "hash mismatches, credential files left in the run.")
    art.add_argument("run_dir", metavar="RUN_DIR")
    _add_output_options(art)
    hook = _optional(_SIGNATURE_HOOK)
    if hook is not None:
        hook.add_arguments(art)
    art.set_defaults(func=_cmd_artifacts)

    for name in _EXTENSIONS:
        module = _optional(name)
        if module is not None:
            module.register(sub)

    def _no_subcommand(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=_no_subcommand)
