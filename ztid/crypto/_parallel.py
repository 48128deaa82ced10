"""A per-process thread pool for AES-GCM work (which releases the GIL), and the buffers it fills.

Made on first use in each process and dropped in a fork()-ed child, which makes its own: a
DataLoader worker never inherits pool threads that do not exist in it.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ztid.errors import UsageError

__all__ = ["MAX_THREADS", "check_threads", "default_threads", "filled_bytes", "run_parts", "take_scratch",
           "give_scratch", "zero"]

MAX_THREADS = 4  # decrypt threads per read, the caller's included
_ZEROS = memoryview(bytes(1 << 20))
_state_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_scratch: dict[int, list[bytearray]] = {}  # zeroed segment buffers, reused by the next decryptor


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's pool threads, and a lock may have been held: start over."""
    global _pool, _state_lock
    _pool, _state_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_threads() -> int:
    """Decrypt threads per read by default: the CPUs this process may run on, at most ``MAX_THREADS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def check_threads(threads: Any) -> int:
    """``None`` means :func:`default_threads`; else an int from 1 to ``MAX_THREADS``.

    Raises:
        UsageError: anything else.
    """
    if threads is None:
        return default_threads()
    if type(threads) is not int or not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"threads must be an int from 1 to {MAX_THREADS} (or None for the default), got {threads!r}")
    return threads


def _executor() -> ThreadPoolExecutor:
    """This process's pool, made on first use (so a fork()-ed child makes its own)."""
    global _pool
    with _state_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS - 1, thread_name_prefix="ztid-decrypt")
        return _pool


class _Part:
    """A part handed to the pool that lets go of its closure (the caller's buffer, the decryptor)
    once run or skipped: the pool's work item may outlive the call by a moment, and a view it
    still held would make the caller's ``bytearray`` refuse a resize or an mmap refuse to close."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn: Callable[[], object] | None = fn

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


def run_parts(parts: Sequence[Callable[[], object]]) -> None:
    """Run every part and return when all have finished: the last in the caller, the others in the pool.

    A part the pool has not started by then (it is busy with other readers) runs in the caller.
    The first exception is re-raised only after every started part has finished, so no part can
    still be writing when the caller reacts (e.g. zeroes its buffer).
    """
    pooled = [_Part(part) for part in parts[:-1]]
    futures: list[Future[None] | None] = []
    for part in pooled:
        try:
            futures.append(_executor().submit(part))
        except RuntimeError:  # the interpreter is shutting down: no new threads
            futures.append(None)
    error: BaseException | None = None
    try:
        parts[-1]()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others finished
        error = exc
    for part, fut in zip(pooled, futures):
        try:
            if fut is None or fut.cancel():
                if error is None:
                    part()
                part.fn = None
                continue
        except BaseException as exc:  # noqa: BLE001
            error = error or exc
            continue
        while True:  # even a KeyboardInterrupt waits: the part is writing into the caller's buffer
            try:
                fut.result()
                break
            except BaseException as exc:  # noqa: BLE001
                error = error or exc
                if fut.done():
                    break
    if error is not None:
        raise error


def zero(view: memoryview) -> None:
    """Overwrite ``view`` (flat bytes) with zeros, without allocating."""
    for at in range(0, len(view), len(_ZEROS)):
        n = min(len(_ZEROS), len(view) - at)
        view[at : at + n] = _ZEROS[:n]


def filled_bytes(size: int, fill: Callable[[memoryview], int]) -> bytes:
    """A new ``bytes`` of up to ``size`` bytes written by ``fill(view)`` (which returns the count).

    One allocation and no copy (a bytearray turned into bytes costs a second allocation and a
    copy, and fresh large allocations page-fault at a fraction of memcpy speed): BytesIO hands
    its own buffer out from getvalue() when no view of it is left.
    """
    bio = io.BytesIO()
    if size:
        bio.seek(size - 1)
        bio.write(b"\0")
    with bio.getbuffer() as view:
        got = fill(view)
    if got != size:
        bio.truncate(got)
    return bio.getvalue()


def take_scratch(size: int) -> bytearray:
    with _state_lock:
        free = _scratch.get(size)
        if free:
            return free.pop()
    return bytearray(size)


def give_scratch(buf: bytearray, dirty: int) -> None:
    zero(memoryview(buf)[:dirty])
    with _state_lock:
        free = _scratch.setdefault(len(buf), [])
        if len(free) < 2 * MAX_THREADS:
            free.append(buf)
