"""Shared plumbing for the CLI verbs: exit codes, --json output, error-to-exit mapping."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ztid.errors import ZtidError

EXIT_OK = 0
EXIT_NO = 1  # denied / invalid / findings
EXIT_USAGE = 2  # usage, unreadable input, broken policy


class CliExit(Exception):
    """Raised inside a verb to end the command with ``code`` and an optional stderr message."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail_usage(message: str) -> NoReturn:
    """End the command with exit code 2 and ``message`` on stderr."""
    raise CliExit(EXIT_USAGE, f"ztid: error: {message}")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (exactly one JSON object on stdout)."""
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def emit(args: argparse.Namespace, obj: dict[str, Any], human: str | Callable[[], str]) -> None:
    """Print ``obj`` as one JSON object when ``--json`` was given, else the human text."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    else:
        text = human() if callable(human) else human
        if text:
            sys.stdout.write(text.rstrip("\n") + "\n")


def error_exit(args: argparse.Namespace, exc: BaseException, *, code: int = EXIT_USAGE, kind: str = "error") -> int:
    """Report ``exc`` (JSON object or stderr line) and return ``code``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"ok": False, "error": kind, "message": str(exc)}, sort_keys=True) + "\n")
    else:
        print(f"ztid: {kind}: {exc}", file=sys.stderr)
    return code


def read_bytes(path: str, what: str) -> bytes:
    """Read a file or ``-`` (stdin); unreadable input ends the command with exit code 2."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        fail_usage(f"cannot read {what} {path!r}: {exc.strerror or exc}")


__all__ = ["CliExit", "EXIT_NO", "EXIT_OK", "EXIT_USAGE", "ZtidError", "add_json_flag", "emit", "error_exit", "fail_usage", "read_bytes"]
