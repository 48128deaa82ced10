"""Fixtures for the dev agent and SVID source tests: a dev CA on disk and agents on short unix paths."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ztid.agent import DevAgent
from ztid.devca import DevCA

TD = "dev.local"
TRAINING = f"spiffe://{TD}/training"


def wait_until(predicate: Callable[[], object], *, timeout: float = 15.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="zta-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ca_dir(short_dir: Path) -> Path:
    d = short_dir / "ca"
    DevCA.create(TD).save(d)
    return d


@pytest.fixture
def start_agent(ca_dir: Path, short_dir: Path) -> Iterator[Callable[..., DevAgent]]:
    """Start DevAgents on ``short_dir/<name>.sock``; all are stopped at teardown."""
    agents: list[DevAgent] = []

    def start(name: str = "agent", **kwargs: object) -> DevAgent:
        if "spiffe_id" not in kwargs and "selectors" not in kwargs:
            kwargs["spiffe_id"] = TRAINING
        agent = DevAgent(kwargs.pop("ca_dir", ca_dir), short_dir / f"{name}.sock", **kwargs).start()  # type: ignore[arg-type]
        agents.append(agent)
        return agent

    yield start
    for a in agents:
        a.stop(grace=None)


@pytest.fixture
def agent(start_agent: Callable[..., DevAgent]) -> DevAgent:
    """An agent serving spiffe://dev.local/training to every local caller, SVIDs of 1 hour."""
    return start_agent()


def selector_yaml(*entries: tuple[str, dict[str, object]]) -> str:
    lines = ["entries:"]
    for sid, sels in entries:
        inner = ", ".join(f"{k}: {v}" for k, v in sels.items())
        lines += [f"  - spiffe_id: {sid}", f"    selectors: {{{inner}}}"]
    return "\n".join(lines) + "\n" if entries else "entries: []\n"


@pytest.fixture
def my_uid() -> int:
    return os.getuid()


SHORT_TTL = dt.timedelta(seconds=2)


@pytest.fixture
def wait() -> Callable[..., object]:
    """``wait(predicate, timeout=15, what=...)``: poll until truthy, else fail the test."""
    return wait_until


@pytest.fixture
def entries_yaml() -> Callable[..., str]:
    """``entries_yaml((spiffe_id, {selector: value}), ...)`` -> selector file text."""
    return selector_yaml
