"""Fixtures for the model-signing tests: one dev trust domain, a partner one, the shipped policy, models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ztid.bundle import BundleSet
from ztid.policy import Policy, load_policy
from ztid.svid import X509Svid
from ztid.testing import TestCA

REPO = Path(__file__).resolve().parents[2]
SHIPPED_POLICY = REPO / "policy.yaml"
TD = "ai-platform.example"
TRAINING = f"spiffe://{TD}/training/job-7"
PIPELINE = f"spiffe://{TD}/pipeline/nightly"
INFERENCE = f"spiffe://{TD}/ns/vision/sa/inference"


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The policy.yaml shipped at the repository root."""
    return load_policy(SHIPPED_POLICY)


@pytest.fixture(scope="session")
def ca() -> TestCA:
    """Our trust domain's CA, with an intermediate (so chains have two certificates)."""
    return TestCA.create(TD, intermediate=True)


@pytest.fixture(scope="session")
def partner() -> TestCA:
    """Another trust domain's CA, whose bundle is loaded but which may not vouch for our names."""
    return TestCA.create("partner.example")


@pytest.fixture(scope="session")
def bundles(ca: TestCA, partner: TestCA) -> BundleSet:
    """Both bundles, as a verifier that knows several trust domains holds them."""
    return BundleSet([ca.bundle(), partner.bundle()])


@pytest.fixture(scope="session")
def training(ca: TestCA) -> X509Svid:
    return ca.issue(TRAINING)


@pytest.fixture(scope="session")
def inference(ca: TestCA) -> X509Svid:
    return ca.issue(INFERENCE)


@pytest.fixture
def root_pem(ca: TestCA, tmp_path: Path) -> Path:
    """Our trust bundle (the root) as a PEM file, as `model_signing --certificate_chain` takes it."""
    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle().to_pem())
    return path


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """Build a small model directory: config.json, two weight shards in a subdirectory, a tokenizer."""

    def make(name: str = "model") -> Path:
        root = tmp_path / name
        (root / "weights").mkdir(parents=True)
        (root / "config.json").write_text('{"arch": "resnet", "layers": 18}\n')
        (root / "weights" / "shard-0.safetensors").write_bytes(os.urandom(70_000))
        (root / "weights" / "shard-1.safetensors").write_bytes(os.urandom(30_001))
        (root / "tokenizer.txt").write_text("a b c\n")
        return root

    return make
