"""The examples in examples/ run as real subprocesses and tell the story the docs promise."""

from __future__ import annotations

import subprocess
import sys

import pytest
from wire_helpers import ROOT

EXPECTED = {
    "socket_service.py": ["/training/job-7 -> shard-0001 for training", "/inference/llm -> refused"],
    "asyncio_service.py": [
        "/inference/llm -> read ok for inference",
        "/inference/llm -> write denied: no rule allows inference to write feature-store",
        "/pipeline/etl -> write ok for pipeline",
    ],
    "grpc_service.py": [
        "/inference/llm GetModel -> weights of resnet",
        "/inference/llm PutModel -> PERMISSION_DENIED ztid: no_matching_rule",
        "/training/job-7 PutModel -> weights of resnet",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(EXPECTED[name]), out.stdout
    for line, want in zip(lines, EXPECTED[name]):
        assert line.startswith(want), (line, want)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_is_short(name):
    assert len((ROOT / "examples" / name).read_text().splitlines()) <= 42
