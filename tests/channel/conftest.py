"""Fixtures for tests/channel: a PKI minted at run time (ours plus a foreign domain), the shipped policy, key pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from channel_helpers import ROOT, Pki, key_pair

from ztid.policy import load_policy


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def policy():
    return load_policy(ROOT / "policy.yaml")


@pytest.fixture
def keys():
    return key_pair()
