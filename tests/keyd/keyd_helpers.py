"""Constants shared by tests/keyd (importable by name: conftest puts this directory on sys.path)."""

from __future__ import annotations

from pathlib import Path

TD = "ai-platform.example"
KEYD_NAME = "keyd.ai-platform.example"  # gRPC checks a DNS name in the server's SVID
ROOT = Path(__file__).resolve().parents[2]
TRAINING = f"spiffe://{TD}/training/job-7"
INFERENCE = f"spiffe://{TD}/inference/llm"
PIPELINE = f"spiffe://{TD}/pipeline/nightly"


def cli(argv: list[str]) -> int:
    """Run the keyd verbs as ``ztid`` would (the lead wires ztid.cli.keyd_cmd into ztid.cli)."""
    import argparse

    from ztid.cli._common import EXIT_USAGE, CliExit
    from ztid.cli import keyd_cmd

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise CliExit(EXIT_USAGE, message)

    parser = Parser(prog="ztid")
    keyd_cmd.register(parser.add_subparsers(dest="group", parser_class=Parser))
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except CliExit as exc:
        return exc.code
