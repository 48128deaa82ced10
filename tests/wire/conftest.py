"""Fixtures for the wire tests: a PKI per session, the shipped policy, a federated variant, servers."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wire_helpers import ROOT, Pki, Server  # noqa: E402

from ztid.policy import load_policy, parse_policy  # noqa: E402


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def policy():
    return load_policy(ROOT / "policy.yaml")


@pytest.fixture(scope="session")
def federated_policy():
    """The shipped policy plus partner.example, whose /training/... workloads may read the data store."""
    text = (ROOT / "policy.yaml").read_text()
    text = text.replace("trust_domain: ai-platform.example\n", "trust_domain: ai-platform.example\nfederation:\n  partner.example: {}\n", 1)
    text = text.replace(
        "  - spiffe://ai-platform.example/{component}/{workload...}\n",
        "  - spiffe://ai-platform.example/{component}/{workload...}\n  - spiffe://partner.example/{component}/{workload...}\n",
        1,
    )
    return parse_policy(text, name="federated.yaml")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for unix socket paths (108-byte limit)."""
    with tempfile.TemporaryDirectory(prefix="ztw-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(source: Any, policy: Any, **kw: Any) -> Server:
        server = Server(source, policy, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
