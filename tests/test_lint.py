"""Pyflakes-level lint (unused imports, undefined names, dead locals) over everything we ship and test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_pyflakes_rules_pass() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise", "ztid", "tests", "bench",
         "examples"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
