"""PolicyWatcher against real file edits: swap good edits, keep the last good policy, say why."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ztid.errors import PolicyError
from ztid.policy.watch import PolicyWatcher

SHIPPED = (Path(__file__).resolve().parents[2] / "policy.yaml").read_text()
JOB = "spiffe://ai-platform.example/training/job-7"
ALLOW_WRITE = SHIPPED.replace("data-store: [read]                   #", "data-store: [read, write]            #")
BROKEN = SHIPPED.replace("data-store: [read]   ", "data-store: [wrtie]  ")


def edit(path: Path, text: str) -> None:
    """Write ``text`` and move mtime forward explicitly (coarse clocks would hide a quick second edit)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(SHIPPED)
    return path


def test_broken_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PolicyError) as info:
        PolicyWatcher(path)
    assert info.value.location.startswith(f"{path}:")


def test_good_edit_swaps_broken_edit_keeps_last_good(policy_file: Path) -> None:
    changes, errors = [], []
    w = PolicyWatcher(policy_file, on_change=lambda old, new: changes.append((old, new)), on_error=errors.append)
    first = w.current
    assert not first.decide(JOB, "data-store", "write").allowed
    assert w.poll() is False  # nothing changed

    edit(policy_file, ALLOW_WRITE)
    assert w.poll() is True
    second = w.current
    assert second is not first and second.decide(JOB, "data-store", "write").allowed
    assert changes == [(first, second)]
    assert w.last_error is None

    edit(policy_file, BROKEN)
    assert w.poll() is False
    assert w.current is second  # the last good policy stays in force
    assert isinstance(w.last_error, PolicyError)
    assert str(w.last_error).startswith(f"{policy_file}:") and "unknown action 'wrtie'" in str(w.last_error)
    assert errors == [w.last_error]
    assert w.current.decide(JOB, "data-store", "write").allowed

    edit(policy_file, SHIPPED)
    assert w.reload() is True
    assert w.last_error is None
    assert w.current.digest == first.digest
    assert not w.current.decide(JOB, "data-store", "write").allowed


def test_touch_or_identical_bytes_change_nothing(policy_file: Path) -> None:
    w = PolicyWatcher(policy_file)
    first = w.current
    edit(policy_file, SHIPPED)  # new mtime, same bytes
    assert w.poll() is False and w.reload() is False
    assert w.current is first


def test_same_size_same_mtime_edit_is_seen_by_reload(policy_file: Path) -> None:
    w = PolicyWatcher(policy_file)
    st = policy_file.stat()
    same_size = SHIPPED.replace("mode: enforce", "mode: audit  ")
    assert len(same_size) == len(SHIPPED)
    policy_file.write_text(same_size)
    os.utime(policy_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert w.poll() is False  # stat says unchanged: poll trusts it
    assert w.reload() is True  # an explicit reload (SIGHUP) always reads and hashes
    assert w.current.mode == "audit"


def test_deleted_file_keeps_last_good(policy_file: Path) -> None:
    w = PolicyWatcher(policy_file)
    first = w.current
    policy_file.unlink()
    assert w.poll() is False
    assert w.current is first
    assert w.last_error is not None and w.last_error.detail.startswith("cannot read policy file")


def test_atomic_replace_is_picked_up(policy_file: Path) -> None:
    w = PolicyWatcher(policy_file)
    tmp = policy_file.with_suffix(".new")
    tmp.write_text(ALLOW_WRITE)
    os.replace(tmp, policy_file)
    assert w.reload() is True
    assert w.current.decide(JOB, "data-store", "write").allowed


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_polling_thread_picks_up_edits(policy_file: Path) -> None:
    seen = threading.Event()
    with PolicyWatcher(policy_file, on_change=lambda old, new: seen.set()).start(interval=0.02) as w:
        edit(policy_file, ALLOW_WRITE)
        assert seen.wait(20)
        assert w.current.decide(JOB, "data-store", "write").allowed
        edit(policy_file, BROKEN)
        assert _wait_for(lambda: w.last_error is not None)
        assert w.current.decide(JOB, "data-store", "write").allowed
    assert w._thread is None


def test_request_reload_without_thread_applies_on_next_read(policy_file: Path) -> None:
    w = PolicyWatcher(policy_file)
    st = policy_file.stat()
    policy_file.write_text(SHIPPED.replace("mode: enforce", "mode: audit  "))
    os.utime(policy_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    w.request_reload()  # what a SIGHUP handler does
    assert w.current.mode == "audit"


def test_request_reload_with_thread(policy_file: Path) -> None:
    with PolicyWatcher(policy_file).start(interval=60) as w:  # the poll would not come for a minute
        st = policy_file.stat()
        policy_file.write_text(SHIPPED.replace("mode: enforce", "mode: audit  "))
        os.utime(policy_file, ns=(st.st_atime_ns, st.st_mtime_ns))
        w.request_reload()
        assert _wait_for(lambda: w.current.mode == "audit")
