"""Fixtures for tests/keyd: a test trust domain, a real key service on 127.0.0.1 over mTLS, clients per workload."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ztid.audit.decisions import DecisionLog
from ztid.crypto.keys import Keyring
from ztid.keyd.client import KeyClient
from ztid.keyd.datasets import DatasetRegistry
from ztid.keyd.server import KeyServer, serve
from ztid.keyd.service import KeyService
from ztid.policy.watch import PolicyWatcher
from ztid.source import StaticSource
from ztid.testing import TestCA, bundle_set

sys.path.insert(0, str(Path(__file__).resolve().parent))

from keyd_helpers import KEYD_NAME, ROOT, TD, TRAINING  # noqa: E402


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create(TD)


@dataclass
class Keyd:
    """One running key service and what it was built from."""

    ca: TestCA
    server: KeyServer
    service: KeyService
    watcher: PolicyWatcher
    policy_path: Path
    keyring: Keyring
    log_path: Path
    log: DecisionLog
    clients: list[KeyClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.server.target

    def source(self, spiffe_id: str, *, ttl: dt.timedelta = dt.timedelta(hours=1)) -> StaticSource:
        return StaticSource(self.ca.issue(spiffe_id, ttl=ttl), bundle_set(self.ca))

    def client(self, spiffe_id: str | None = None, *, source: Any = None, ttl: dt.timedelta = dt.timedelta(hours=1)) -> KeyClient:
        src = source if source is not None else self.source(spiffe_id or TRAINING, ttl=ttl)
        c = KeyClient(self.target, source=src, server_name=KEYD_NAME)
        self.clients.append(c)
        return c

    def revoke_training_read(self) -> None:
        """Edit the policy copy: training no longer reads the data store; reload it."""
        text = self.policy_path.read_text()
        edited = text.replace("      data-store: [read]                   # read training data; never write it back\n", "", 1)
        assert edited != text
        self.policy_path.write_text(edited)
        assert self.watcher.reload()

    def log_lines(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


@pytest.fixture
def keyd(ca: TestCA, tmp_path: Path) -> Iterator[Any]:
    """A factory: ``keyd(max_lease=...)`` starts a key service on 127.0.0.1 with the shipped policy (a copy)."""
    running: list[Keyd] = []

    def start(*, max_lease: dt.timedelta = dt.timedelta(minutes=5), register: bool = True, also_trust: tuple[Any, ...] = ()) -> Keyd:
        d = tmp_path / f"keyd{len(running)}"
        d.mkdir()
        policy_path = d / "policy.yaml"
        shutil.copy(ROOT / "policy.yaml", policy_path)
        watcher = PolicyWatcher(policy_path)
        keyring = Keyring.create(d / "keyring.json")
        log_path = d / "decisions.log"
        log = DecisionLog(log_path, fsync="never")
        service = KeyService(policy=watcher, backend=keyring, log=log, registry=DatasetRegistry(d / "datasets.json"),
                             max_lease=max_lease, register_on_new=register)
        source = StaticSource(ca.issue(f"spiffe://{TD}/keyd/main", dns_names=[KEYD_NAME]), bundle_set(ca, *also_trust))
        server = serve("127.0.0.1:0", service=service, source=source, max_workers=4)
        k = Keyd(ca, server, service, watcher, policy_path, keyring, log_path, log)
        running.append(k)
        return k

    yield start
    for k in running:
        for c in k.clients:
            c.close()
        k.server.stop()
        k.log.close()


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    """A small dataset: three shards of different sizes, one in a subdirectory."""
    import os

    src = tmp_path / "plain"
    (src / "val").mkdir(parents=True)
    (src / "train-000.bin").write_bytes(os.urandom(300_000))
    (src / "train-001.bin").write_bytes(os.urandom(70_001))
    (src / "val" / "val-000.bin").write_bytes(b"")
    return src
