"""require / @requires / peer_scope: deny without a peer, target defaults to self, no leaks across threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from ztid.enforce.require import configure, current_peer, decide, peer_scope, require, requires
from ztid.errors import IdentityError, PermissionDenied, UsageError
from ztid.identity import Identity
from ztid.policy import load_policy
from ztid.policy.watch import PolicyWatcher
from ztid.spiffeid import SpiffeId

SHIPPED = Path(__file__).resolve().parents[2] / "policy.yaml"
STORE_A = "spiffe://ai-platform.example/ns/team-a/sa/data-store"
TRAINING_A = SpiffeId.parse("spiffe://ai-platform.example/ns/team-a/sa/training")
TRAINING_B = SpiffeId.parse("spiffe://ai-platform.example/ns/team-b/sa/training")
INFERENCE = SpiffeId.parse("spiffe://ai-platform.example/inference/svc")

pytestmark = pytest.mark.usefixtures("clean_require")


@pytest.fixture
def store(shipped):
    configure(policy=shipped, self_id=STORE_A)
    return shipped


def test_no_peer_denies(store) -> None:
    with pytest.raises(PermissionDenied) as info:
        require("read")
    d = info.value.decision
    assert (d.allowed, d.code, d.policy_digest) == (False, "no_peer", store.digest)
    assert str(info.value) == "permission denied: no authenticated peer in scope"


def test_no_policy_denies() -> None:
    with peer_scope(TRAINING_A), pytest.raises(PermissionDenied) as info:
        require("read", "data-store")
    assert info.value.decision.code == "no_policy"


def test_target_defaults_to_own_component_and_tenant(store) -> None:
    with peer_scope(TRAINING_A):
        d = require("read")
        assert (d.allowed, d.target, d.target_tenant, d.rule) == (True, "data-store", "team-a", "components.training.allow.data-store")
        with pytest.raises(PermissionDenied) as info:
            require("write")
        assert info.value.decision.code == "no_matching_rule"
    with peer_scope(TRAINING_B), pytest.raises(PermissionDenied) as info:
        require("read")  # another tenant's training job
    assert info.value.decision.code == "tenant_mismatch"
    with peer_scope(INFERENCE), pytest.raises(PermissionDenied) as info:
        require("read")
    assert info.value.decision.code == "explicit_deny"


def test_explicit_target_and_peer(store) -> None:
    assert require("read", "registry", peer=INFERENCE).allowed
    assert require("read", "registry", peer=str(INFERENCE)).allowed
    with pytest.raises(PermissionDenied) as info:
        require("read", "registry", peer="not-an-id")
    assert info.value.decision.code == "malformed_identity"
    # naming its own component keeps its own tenant; naming another component leaves the tenant unknown
    with pytest.raises(PermissionDenied):
        require("read", "data-store", peer=TRAINING_B)
    assert require("read", "feature-store", peer=TRAINING_B).allowed
    with pytest.raises(PermissionDenied):
        require("read", "feature-store", peer=TRAINING_B, target_tenant="team-a")


def test_no_self_id_needs_a_target(shipped) -> None:
    configure(policy=shipped)
    with peer_scope(TRAINING_A):
        with pytest.raises(PermissionDenied) as info:
            require("read")
        assert info.value.decision.code == "unknown_target"
        assert info.value.decision.reason == "no target given and no self_id configured"
        assert require("read", "data-store").allowed
    configure(policy=shipped, self_id="spiffe://ai-platform.example/solo")
    with peer_scope(TRAINING_A), pytest.raises(PermissionDenied) as info:
        require("read")
    assert "matches no identity template" in info.value.decision.reason


def test_configure_rejects_nonsense(shipped) -> None:
    with pytest.raises(IdentityError):
        configure(policy=shipped, self_id="spiffe://bad/")
    with pytest.raises(UsageError):
        configure(policy="policy.yaml")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        with peer_scope("spiffe://ai-platform.example/training/x"):  # type: ignore[arg-type]
            pass


def test_internal_error_denies(store, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(type(store), "decide", boom)
    with peer_scope(TRAINING_A), pytest.raises(PermissionDenied) as info:
        require("read")
    assert info.value.decision.code == "internal_error"


def test_peer_scope_nests_and_restores(store) -> None:
    assert current_peer() is None
    with peer_scope(TRAINING_A):
        assert current_peer() == store.identify(TRAINING_A)
        ident = Identity.unmapped(INFERENCE)
        with peer_scope(ident) as p:
            assert p is ident and current_peer() is ident
        assert current_peer().spiffe_id == TRAINING_A
    assert current_peer() is None


def test_current_peer_without_policy_is_unmapped() -> None:
    with peer_scope(TRAINING_A):
        assert current_peer() == Identity.unmapped(TRAINING_A)


def test_requires_sync(store) -> None:
    calls = []

    @requires("read")
    def fetch(name: str) -> str:
        """Fetch a shard."""
        calls.append(name)
        return name.upper()

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch a shard."
    with pytest.raises(PermissionDenied):
        fetch("a")
    with peer_scope(TRAINING_A):
        assert fetch("b") == "B"
    with peer_scope(INFERENCE), pytest.raises(PermissionDenied):
        fetch("c")
    assert calls == ["b"]  # the body never ran for a deny


def test_requires_async(store) -> None:
    calls = []

    @requires("write", "registry")
    async def push(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(0)
        return name

    async def main() -> None:
        with pytest.raises(PermissionDenied):
            await push("no-peer")
        with peer_scope(TRAINING_A):
            assert await push("ok") == "ok"
            # tasks inherit the scope, and a scope set inside a task stays in that task
            assert await asyncio.create_task(push("task")) == "task"

            async def other() -> None:
                with peer_scope(INFERENCE):
                    await asyncio.sleep(0)
                    with pytest.raises(PermissionDenied):
                        await push("inference")

            await asyncio.gather(other(), push("gathered"))
            assert current_peer().spiffe_id == TRAINING_A

    assert asyncio.iscoroutinefunction(push)
    asyncio.run(main())
    assert sorted(calls) == ["gathered", "ok", "task"]


def test_threads_do_not_leak_peers(store) -> None:
    results: dict[str, object] = {}
    inside = threading.Event()
    release = threading.Event()

    def in_scope() -> None:
        with peer_scope(TRAINING_A):
            inside.set()
            release.wait(10)
            results["scoped"] = require("read").allowed

    def outside() -> None:
        inside.wait(10)
        results["peer"] = current_peer()
        results["decision"] = decide("read").code
        release.set()

    threads = [threading.Thread(target=in_scope), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {"scoped": True, "peer": None, "decision": "no_peer"}


def test_watcher_reload_is_seen_by_require(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(SHIPPED.read_text())
    watcher = PolicyWatcher(path)
    configure(policy=watcher, self_id=STORE_A)
    with peer_scope(TRAINING_A):
        with pytest.raises(PermissionDenied):
            require("write")
        path.write_text(SHIPPED.read_text().replace("data-store: [read]   ", "data-store: [read, write]"))
        assert watcher.reload()
        d = require("write")
        assert d.allowed and d.policy_digest == watcher.current.digest


def test_audit_mode_require_returns_would_deny(tmp_path) -> None:
    policy = load_policy(SHIPPED)
    text = SHIPPED.read_text().replace("\nmode: enforce", "\nmode: audit")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    configure(policy=load_policy(path), self_id=STORE_A)
    with peer_scope(INFERENCE):
        d = require("read")
    assert (d.allowed, d.would_deny, d.code) == (True, True, "explicit_deny")
    assert policy.digest != d.policy_digest
