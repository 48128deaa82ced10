"""Shared fixtures for the Kubernetes audit, artifact audit, SARIF and generator tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ztid.policy import Policy, load_policy

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
CHECKS = FIXTURES / "checks"
REPO = HERE.parent.parent
SHIPPED_POLICY = REPO / "policy.yaml"


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The policy.yaml shipped at the repository root."""
    return load_policy(SHIPPED_POLICY)


@pytest.fixture(scope="session")
def literal_ns_policy() -> Policy:
    """A policy whose identity templates name one literal namespace (ml-training)."""
    return load_policy(FIXTURES / "policy-literal-ns.yaml")
