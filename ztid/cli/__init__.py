"""The ``ztid`` command: ``main(argv) -> int``.

Exit codes (DESIGN §4): 0 allowed/valid/clean, 1 denied/invalid/findings, 2 usage,
unreadable input or a broken policy. ``--json`` prints exactly one JSON object on stdout.
Each verb group lives in its own module and registers itself via ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ztid.cli._common import EXIT_USAGE, CliExit

__all__ = ["main"]

# Verb-group modules, each exposing register(subparsers). Order is the order of --help.
_GROUPS = (
    "ztid.cli.id_cmd",
    "ztid.cli.svid_cmd",
    "ztid.cli.policy_cmd",
    "ztid.cli.ca_cmd",
    "ztid.cli.agent_cmd",
    "ztid.cli.sidecar_cmd",
    "ztid.cli.audit_cmd",
    "ztid.cli.crypto_cmd",
    "ztid.cli.keyd_cmd",
    "ztid.cli.sign_cmd",
    "ztid.cli.generate_cmd",
    "ztid.cli.demo_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        raise CliExit(EXIT_USAGE, f"{self.prog}: error: {message}\n{self.format_usage()}")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (every verb group that is installed)."""
    parser = _Parser(prog="ztid", description="Zero-trust identity and policy for ML infrastructure.")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that verb group is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ztid`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(func(args))
    except CliExit as exc:
        if exc.message:
            print(exc.message.rstrip("\n"), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _entry() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
