"""Random access into a Tink-format stream: decrypt only the segments a read touches.

The stream's length fixes its segment count, so segment ``i`` can be read alone; its nonce binds
its index and whether it is last. The last segment is decrypted when the decryptor opens, so
``size`` is authenticated and a truncated stream fails at once rather than at its end.
"""

from __future__ import annotations

import io
import os
import threading
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

    Attributes:
        size: the plaintext size, authenticated (the last segment verified on open).

    Raises:
        DecryptionError: the header, length or last segment is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size or start.
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
    ) -> None:
        self._layout = layout = Layout.of(segment_size)
        if type(start) is not int or start < 0:
            raise UsageError(f"start must be a non-negative int, got {start!r}")
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
        self._ct = memoryview(bytearray(layout.segment_size))
        self._pt = memoryview(bytearray(layout.capacity))
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
            self._open(index, self._pt[: self._segment_span(index)[1]])
            self._cached = index

    def readinto_at(self, buffer: Any, offset: int) -> int:
        """Decrypt plaintext from ``offset`` into ``buffer``; return the bytes written (0 at the end).

        On failure the written part of ``buffer`` is zeroed before the error is raised.

        Raises:
            DecryptionError: a touched segment does not verify.
            UsageError: negative offset.
        """
        if type(offset) is not int or offset < 0:
            raise UsageError(f"offset must be a non-negative int, got {offset!r}")
        out = as_view(buffer, "buffer")
        total = max(0, min(len(out), self.size - offset))
        pos = 0
        with self._lock:
            try:
                while pos < total:
                    index = self._layout.segment_of(offset + pos)
                    seg_start, seg_len = self._segment_span(index)
                    within = offset + pos - seg_start
                    take = min(seg_len - within, total - pos)
                    if within == 0 and take == seg_len and index != self._cached:
                        self._open(index, out[pos : pos + take])
                    else:
                        self._load(index)
                        out[pos : pos + take] = self._pt[within : within + take]
                    pos += take
            except DecryptionError:
                out[:pos] = bytes(pos)
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
        buf = bytearray(max(0, min(length, self.size - offset)))
        self.readinto_at(buf, offset)
        return bytes(buf)

    pread = read_range

    def reader(self) -> "SeekableReader":
        """A seekable file object over the plaintext (closing it leaves this decryptor open)."""
        return SeekableReader(self)

    def close(self) -> None:
        """Forget the cached plaintext; close the file if this decryptor owns it."""
        with self._lock:
            self._pt[:] = bytes(len(self._pt))
            self._cached = -1
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
        data = self._dec.read_range(self._pos, max(0, self._dec.size - self._pos))
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed and self._close_decryptor:
            self._dec.close()
        super().close()
