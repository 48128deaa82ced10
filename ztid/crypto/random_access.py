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
from collections.abc import Callable
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
from ztid.crypto._parallel import (
    check_threads,
    filled_bytes,
    give_scratch,
    run_parts,
    take_scratch,
    zero,
)
from ztid.errors import DecryptionError, UsageError

__all__ = ["RandomAccessDecryptor", "SeekableReader"]

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
                self._pt_buf = take_scratch(self._layout.capacity)
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
                give_scratch(buf, self._dirty)
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
