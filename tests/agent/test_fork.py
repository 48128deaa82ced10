"""Fork safety: children started by fork keep a working source (hand-off), never touching gRPC."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import time

import pytest

from ztid.errors import SourceError
from ztid.source import StaticSource
from ztid.source_files import FileSource
from ztid.source_workload import WorkloadApiSource


def _in_fork(fn) -> object:
    """Run ``fn()`` in a child made by os.fork; return what it returned (pickled through a pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            try:
                result = ("ok", fn())
            except BaseException as exc:  # report, never raise into pytest's machinery
                result = ("error", f"{type(exc).__name__}: {exc}")
            with os.fdopen(w, "wb") as f:
                pickle.dump(result, f)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pickle.loads(data)


def test_forked_child_serves_the_parents_snapshot_without_grpc_threads(agent) -> None:
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    try:
        parent = src.snapshot()

        def child():
            import threading

            snap = src.snapshot()
            return (snap.svid.leaf.serial_number, snap.generation, str(src.last_error), threading.active_count())

        status, (serial, generation, why, threads) = _in_fork(child)
        assert status == "ok"
        assert (serial, generation) == (parent.svid.leaf.serial_number, parent.generation)
        assert "forked child" in why
        assert threads == 1  # no watcher restarted in the child
        assert src.snapshot().svid.leaf.serial_number == serial  # the parent is unaffected
    finally:
        src.close()


def test_handoff_life_is_bounded_by_the_svid_expiry(start_agent) -> None:
    agent = start_agent(ttl=dt.timedelta(seconds=2))
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    try:
        def child():
            snap = src.snapshot()
            while dt.datetime.now(dt.timezone.utc) < snap.svid.not_after + dt.timedelta(milliseconds=50):
                time.sleep(0.05)
            try:
                src.snapshot()
            except SourceError as exc:
                return str(exc)
            return "still serving"

        status, message = _in_fork(child)
        assert status == "ok"
        assert "expired" in message
        assert src.snapshot().svid.not_after > dt.datetime.now(dt.timezone.utc)  # the parent rotated meanwhile
    finally:
        src.close()


def _mp_worker(src, conn) -> None:
    try:
        conn.send(("ok", str(src.snapshot().svid.spiffe_id), src.snapshot().svid.leaf.serial_number))
    except Exception as exc:  # pragma: no cover - reported to the parent
        conn.send(("error", repr(exc), 0))
    conn.close()


def test_multiprocessing_fork_context(agent) -> None:
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    try:
        ctx = multiprocessing.get_context("fork")
        parent_conn, child_conn = ctx.Pipe()
        p = ctx.Process(target=_mp_worker, args=(src, child_conn))
        p.start()
        assert parent_conn.poll(20)
        result = parent_conn.recv()
        p.join(20)
        assert p.exitcode == 0
        assert result == ("ok", "spiffe://dev.local/training", src.snapshot().svid.leaf.serial_number)
    finally:
        src.close()


def test_fork_handoff_is_picklable_for_spawned_children(agent) -> None:
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    try:
        handoff = src.fork_handoff()
        assert isinstance(handoff, StaticSource)
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        p = ctx.Process(target=_mp_worker, args=(handoff, child_conn))
        p.start()
        assert parent_conn.poll(60)
        result = parent_conn.recv()
        p.join(30)
        assert result == ("ok", "spiffe://dev.local/training", src.snapshot().svid.leaf.serial_number)
        copy = pickle.loads(pickle.dumps(handoff))
        assert copy.snapshot().bundles == handoff.snapshot().bundles
    finally:
        src.close()


def test_file_source_keeps_reloading_in_a_forked_child(tmp_path) -> None:
    from ztid.devca import DevCA

    ca = DevCA.create("dev.local")
    cert, key, bundle = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "b.pem"
    first = ca.issue("spiffe://dev.local/a")
    cert.write_bytes(first.chain_pem())
    key.write_bytes(first.key_pem())
    bundle.write_bytes(ca.bundle().to_pem())
    src = FileSource(cert, key, bundle, poll_interval=0.05)
    try:
        second = ca.issue("spiffe://dev.local/b")

        def child():
            os.replace(_write(tmp_path / "k.tmp", second.key_pem()), key)
            os.replace(_write(tmp_path / "c.tmp", second.chain_pem()), cert)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the child's own poller must pick it up
                if str(src.snapshot().svid.spiffe_id) == "spiffe://dev.local/b":
                    return "reloaded"
                time.sleep(0.05)
            return "stale"

        assert _in_fork(child) == ("ok", "reloaded")
    finally:
        src.close()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_child_that_exits_normally_does_not_hang_on_the_inherited_channel(agent) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from ztid.source_workload import WorkloadApiSource
        src = WorkloadApiSource(sys.argv[1], timeout=5)
        pid = os.fork()
        if pid == 0:
            print("child", src.snapshot().svid.spiffe_id, flush=True)
            src.close()
            sys.exit(0)  # full interpreter shutdown in the child
        _, status = os.waitpid(pid, 0)
        print("child-exit", os.waitstatus_to_exitcode(status), flush=True)
        src.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script, agent.endpoint], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "child spiffe://dev.local/training" in out.stdout
    assert "child-exit 0" in out.stdout


def test_pytorch_dataloader_fork_workers_use_the_handoff(agent) -> None:
    torch_data = pytest.importorskip("torch.utils.data")  # the torch extra
    src = WorkloadApiSource(agent.endpoint, timeout=5)

    class Items(torch_data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return src.snapshot().svid.leaf.serial_number % (1 << 62), os.getpid()

    try:
        loader = torch_data.DataLoader(Items(), batch_size=None, num_workers=2, multiprocessing_context="fork")
        rows = [(int(s), int(p)) for s, p in loader]
        assert {s for s, _ in rows} == {src.snapshot().svid.leaf.serial_number % (1 << 62)}
        assert os.getpid() not in {p for _, p in rows}  # really served by worker processes
    finally:
        src.close()


def test_a_failed_closed_source_stays_closed_in_the_child(start_agent, short_dir, entries_yaml, my_uid, wait) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid})))
    agent = start_agent(selectors=sel)
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    try:
        agent.state.set_entries(())
        wait(lambda: src.last_error is not None and "PERMISSION_DENIED" in str(src.last_error), what="fail closed")

        def child():
            try:
                src.snapshot()
            except SourceError as exc:
                return str(exc)
            return "served"

        status, message = _in_fork(child)
        assert status == "ok" and "PERMISSION_DENIED" in message
    finally:
        src.close()
