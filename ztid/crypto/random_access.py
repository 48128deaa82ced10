"""Random access into a Tink-format stream: decrypt only the segments a read touches.

The stream's length fixes its segment count, so segment ``i`` can be read alone; its nonce binds
its index and whether it is last. The last segment is decrypted when the decryptor opens, so
``size`` is authenticated and a truncated stream fails at once rather than at its end.

A read that covers whole segments of an in-memory (or mmap-ed) stream decrypts them straight into
the caller's buffer, split across a small per-process thread pool (AES-GCM releases the GIL). The
call returns only after every segment verified; if any fails, the whole range is zeroed first.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ztid.crypto._format import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    Layout,
    SegmentCipher,
    as_view,
    check_key,
    parse_header,
)
from ztid.errors import DecryptionError, UsageError

__all__ = ["RandomAccessDecryptor", "SeekableReader", "default_threads", "filled_bytes", "run_parts"]

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


def _take_scratch(size: int) -> bytearray:
    with _state_lock:
        free = _scratch.get(size)
        if free:
            return free.pop()
    return bytearray(size)


def _give_scratch(buf: bytearray, dirty: int) -> None:
    zero(memoryview(buf)[:dirty])
    with _state_lock:
        free = _scratch.setdefault(len(buf), [])
        if len(free) < 2 * MAX_THREADS:
            free.append(buf)


class RandomAccessDecryptor:
    """Decrypts any plaintext range of one stream held in memory or in a seekable file.

    Args:
        key: the stream's input key (≥ 32 bytes).
        source: the stream as a bytes-like object, or a binary file opened for reading.
        associated_data: the associated data it was encrypted with.
        segment_size: its ciphertext segment size.
        start: where the stream begins in ``source`` (after a container header); it runs to the end.
        close_fileobj: close a file ``source`` when this decryptor closes.
        threads: decrypt threads for a read spanning several whole segments of an in-memory
            ``source`` (``None``: :func:`default_threads`; 1: the caller's thread only). File
            sources are read one segment at a time in the caller's thread.

    Attributes:
        size: the plaintext size, authenticated (the last segment verified on open).

    Raises:
        DecryptionError: the header, length or last segment is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size, start or threads.
    """

    def __init__(
        self,
        key: Any,
        source: Any,
        associated_data: Any,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        start: int = 0,
        close_fileobj: bool = False,
        threads: int | None = None,
    ) -> None:
        self._layout = layout = Layout.of(segment_size)
        if type(start) is not int or start < 0:
            raise UsageError(f"start must be a non-negative int, got {start!r}")
        self.threads = check_threads(threads)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._close_fileobj = close_fileobj
        self._mem: memoryview | None = None
        self._fd = -1
        if hasattr(source, "read"):
            self._file = source
            length = self._file_length(source) - start
        else:
            self._mem = as_view(source, "source")[start:]
            length = len(self._mem)
        self._start = start
        self._length = length
        self._count = layout.segments_in(max(length, 0))
        self.size = length - HEADER_SIZE - TAG_SIZE * self._count
        self._ct: memoryview | None = None  # ciphertext scratch, for file sources only
        self._pt_buf: bytearray | None = None  # plaintext of the cached segment (borrowed scratch)
        self._pt = memoryview(b"")
        self._dirty = 0  # how much of _pt may hold plaintext
        self._cached = -1
        salt, prefix = parse_header(self._read(0, HEADER_SIZE))
        self._cipher = SegmentCipher(check_key(key), salt, prefix, bytes(as_view(associated_data, "associated_data")))
        with self._lock:
            self._load(self._count - 1)

    def _file_length(self, fileobj: Any) -> int:
        try:
            self._fd = fileobj.fileno()
            return os.fstat(self._fd).st_size
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = -1
            return fileobj.seek(0, io.SEEK_END)

    def _read(self, offset: int, size: int) -> memoryview:
        """Stream bytes [offset, offset+size): a view into memory, or read into the scratch buffer."""
        if self._mem is not None:
            return self._mem[offset : offset + size]
        if self._ct is None:
            self._ct = memoryview(bytearray(self._layout.segment_size))
        dst = self._ct[:size]
        got = 0
        while got < size:
            if self._fd >= 0:
                n = os.preadv(self._fd, [dst[got:]], self._start + offset + got)
            else:
                self._file.seek(self._start + offset + got)  # type: ignore[union-attr]
                n = self._file.readinto(dst[got:])  # type: ignore[union-attr]
            if not n:
                raise DecryptionError()  # the file shrank under us
            got += n
        return dst

    def _segment_span(self, index: int) -> tuple[int, int]:
        """(plaintext start, plaintext length) of segment ``index``."""
        start = self._layout.plaintext_start(index)
        if index == self._count - 1:
            return start, self.size - start
        return start, self._layout.first_capacity if index == 0 else self._layout.capacity

    def _open(self, index: int, out: memoryview) -> None:
        at = self._layout.ciphertext_start(index)
        end = min(self._length, (index + 1) * self._layout.segment_size)
        self._cipher.open_into(index, index == self._count - 1, self._read(at, end - at), out)

    def _load(self, index: int) -> None:
        if self._cached != index:
            self._cached = -1
            if self._pt_buf is None:
                self._pt_buf = _take_scratch(self._layout.capacity)
                self._pt = memoryview(self._pt_buf)
            size = self._segment_span(index)[1]
            self._dirty = max(self._dirty, size)
            self._open(index, self._pt[:size])
            self._cached = index

    def _open_run(self, indices: range, out: memoryview, offset: int) -> None:
        """Decrypt whole segments ``indices`` straight into ``out`` (which holds plaintext from ``offset``)."""
        for index in indices:
            seg_start, seg_len = self._segment_span(index)
            self._open(index, out[seg_start - offset : seg_start - offset + seg_len])

    def _fill(self, out: memoryview, offset: int, total: int) -> None:
        """Write plaintext [offset, offset+total) into ``out``: whole segments directly, in parallel
        when there are several; the partial (or cached) ones at either end through the cache."""
        end = offset + total
        first, last = self._layout.segment_of(offset), self._layout.segment_of(end - 1)
        lo, hi = first, last + 1  # whole segments to decrypt directly: [lo, hi)
        start, length = self._segment_span(first)
        if start < offset or start + length > end or first == self._cached:
            lo += 1
        if hi > lo:
            start, length = self._segment_span(last)
            if start + length > end or last == self._cached:
                hi -= 1
        edges = [i for i in (first, last) if not lo <= i < hi]

        def through_cache() -> None:
            for index in dict.fromkeys(edges):
                seg_start, seg_len = self._segment_span(index)
                a, b = max(offset, seg_start), min(end, seg_start + seg_len)
                self._load(index)
                out[a - offset : b - offset] = self._pt[a - seg_start : b - seg_start]

        n = min(self.threads if self._mem is not None else 1, hi - lo)
        if n <= 1:
            self._open_run(range(lo, hi), out, offset)
            through_cache()
            return
        cuts = [lo + (hi - lo) * k // n for k in range(n + 1)]
        parts: list[Callable[[], object]] = [
            (lambda r=range(cuts[k], cuts[k + 1]): self._open_run(r, out, offset)) for k in range(n)
        ]
        mine = parts[-1]
        parts[-1] = lambda: (through_cache(), mine())
        run_parts(parts)

    def readinto_at(self, buffer: Any, offset: int) -> int:
        """Decrypt plaintext from ``offset`` into ``buffer``; return the bytes written (0 at the end).

        On any failure the range of ``buffer`` it would fill is zeroed before the error is raised.

        Raises:
            DecryptionError: a touched segment does not verify.
            UsageError: negative offset.
        """
        if type(offset) is not int or offset < 0:
            raise UsageError(f"offset must be a non-negative int, got {offset!r}")
        out = as_view(buffer, "buffer")
        total = max(0, min(len(out), self.size - offset))
        if not total:
            return 0
        with self._lock:
            try:
                self._fill(out, offset, total)
            except BaseException:
                zero(out[:total])
                raise
        return total

    def read_range(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` plaintext bytes from ``offset`` (fewer at the end).

        Raises:
            DecryptionError: a touched segment does not verify.
            UsageError: negative offset or length.
        """
        if type(length) is not int or length < 0:
            raise UsageError(f"length must be a non-negative int, got {length!r}")
        if type(offset) is not int or offset < 0:
            raise UsageError(f"offset must be a non-negative int, got {offset!r}")
        return filled_bytes(max(0, min(length, self.size - offset)), lambda view: self.readinto_at(view, offset))

    pread = read_range

    def reader(self) -> "SeekableReader":
        """A seekable file object over the plaintext (closing it leaves this decryptor open)."""
        return SeekableReader(self)

    def close(self) -> None:
        """Forget the cached plaintext; close the file if this decryptor owns it."""
        with self._lock:
            self._cached = -1
            buf, self._pt_buf, self._pt = self._pt_buf, None, memoryview(b"")
            if buf is not None:
                _give_scratch(buf, self._dirty)
            self._dirty = 0
            if self._file is not None and self._close_fileobj:
                self._file.close()

    def __enter__(self) -> "RandomAccessDecryptor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SeekableReader(io.RawIOBase):
    """A read-only, seekable file object over a :class:`RandomAccessDecryptor`'s plaintext."""

    def __init__(self, decryptor: RandomAccessDecryptor, *, close_decryptor: bool = False) -> None:
        super().__init__()
        self._dec = decryptor
        self._close_decryptor = close_decryptor
        self._pos = 0

    @property
    def size(self) -> int:
        """The plaintext size."""
        return self._dec.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._dec.size}.get(whence)
        if base is None:
            raise UsageError(f"seek whence must be 0, 1 or 2, got {whence!r}")
        if base + offset < 0:
            raise UsageError(f"seek to a negative position ({base + offset})")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the current position with verified plaintext.

        Raises:
            DecryptionError: a touched segment does not verify.
        """
        self._checkClosed()
        n = self._dec.readinto_at(buffer, self._pos)
        self._pos += n
        return n

    def readall(self) -> bytes:
        self._checkClosed()
        data = self._dec.read_range(self._pos, max(0, self._dec.size - self._pos))
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed and self._close_decryptor:
            self._dec.close()
        super().close()
