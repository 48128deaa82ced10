"""Fixtures for the policy tests: the shipped policy, and policy files written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ztid.enforce import require as require_mod
from ztid.policy import Policy, load_policy

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"


@pytest.fixture(scope="session")
def shipped() -> Policy:
    return load_policy(SHIPPED)


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def clean_require() -> Iterator[None]:
    """Reset require()'s global configuration around a test."""
    require_mod.configure()
    yield
    require_mod.configure()
