"""Constants shared by tests/keyd (importable by name: conftest puts this directory on sys.path)."""

from __future__ import annotations

from pathlib import Path

TD = "ai-platform.example"
KEYD_NAME = "keyd.ai-platform.example"  # gRPC checks a DNS name in the server's SVID
ROOT = Path(__file__).resolve().parents[2]
TRAINING = f"spiffe://{TD}/training/job-7"
INFERENCE = f"spiffe://{TD}/inference/llm"
PIPELINE = f"spiffe://{TD}/pipeline/nightly"
