"""The file objects of :mod:`ztid.crypto.stream`: an encrypting writer and a verifying reader."""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from ztid.crypto._format import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    NONCE_PREFIX_SIZE,
    TAG_SIZE,
    Layout,
    SegmentCipher,
    ad_bytes,
    as_view,
    build_header,
    check_key,
    parse_header,
)
from ztid.errors import DecryptionError

__all__ = ["StreamReader", "StreamWriter", "open_reader", "open_writer"]


def _write_all(fileobj: BinaryIO, data: memoryview) -> None:
    while data:
        written = fileobj.write(data)
        if written is None:  # a non-blocking raw file that could take nothing: retry
            continue
        data = data[written:]


class StreamWriter(io.RawIOBase):
    """A write-only file object that encrypts into ``fileobj``; create it with :func:`open_writer`.

    ``close()`` writes the last segment; a stream that is never closed cannot be decrypted. Leaving
    a ``with`` block by an exception, or dropping the writer unclosed, aborts instead: no last
    segment is written, so a half-written stream never decrypts as a shorter whole one.
    """

    def __init__(self, fileobj: BinaryIO, cipher: SegmentCipher, header: bytes, layout: Layout, close_fileobj: bool):
        super().__init__()
        self._file = fileobj
        self._cipher = cipher
        self._layout = layout
        self._close_fileobj = close_fileobj
        self._pt = bytearray(layout.capacity)
        self._ptv = memoryview(self._pt)
        self._ctv = memoryview(bytearray(layout.segment_size))
        self._fill = 0
        self._index = 0
        _write_all(fileobj, memoryview(header))

    def writable(self) -> bool:
        return True

    def _capacity(self) -> int:
        return self._layout.first_capacity if self._index == 0 else self._layout.capacity

    def _emit(self, plaintext: memoryview, last: bool) -> None:
        out = self._ctv[: len(plaintext) + TAG_SIZE]
        self._cipher.seal_into(self._index, last, plaintext, out)
        _write_all(self._file, out)
        self._index += 1

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Encrypt ``data``; full segments go out as soon as more data follows them."""
        self._checkClosed()
        view = as_view(data, "data")
        size, pos = len(view), 0
        if self._fill:
            cap = self._capacity()
            pos = min(cap - self._fill, size)
            self._pt[self._fill : self._fill + pos] = view[:pos]
            self._fill += pos
            if self._fill < cap or pos == size:
                return size
            self._emit(self._ptv[:cap], last=False)
            self._fill = 0
        while size - pos > self._capacity():
            cap = self._capacity()
            self._emit(view[pos : pos + cap], last=False)
            pos += cap
        self._pt[: size - pos] = view[pos:]
        self._fill = size - pos
        return size

    def abort(self) -> None:
        """Close without writing the last segment: what was written can never decrypt."""
        if not self.closed:
            self._pt[:] = bytes(len(self._pt))
            self._fill = 0
            io.RawIOBase.close(self)
            if self._close_fileobj:
                self._file.close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if hasattr(self, "_pt"):  # fully constructed
            self.abort()

    def close(self) -> None:
        """Write the last segment and flush (closes ``fileobj`` only if asked to)."""
        if self.closed:
            return
        try:
            self._emit(self._ptv[: self._fill], last=True)
            if hasattr(self._file, "flush"):
                self._file.flush()
            if self._close_fileobj:
                self._file.close()
        finally:
            self._pt[:] = bytes(len(self._pt))
            super().close()


def open_writer(
    key: Any,
    fileobj: BinaryIO,
    associated_data: Any,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    close_fileobj: bool = False,
) -> StreamWriter:
    """Return a file object whose writes are encrypted into ``fileobj`` (header written at once).

    Raises:
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size.
    """
    layout = Layout.of(segment_size)
    salt, prefix = os.urandom(KEY_SIZE), os.urandom(NONCE_PREFIX_SIZE)
    cipher = SegmentCipher(check_key(key), salt, prefix, ad_bytes(associated_data))
    return StreamWriter(fileobj, cipher, build_header(salt, prefix), layout, close_fileobj)


class StreamReader(io.RawIOBase):
    """A read-only file object that decrypts ``fileobj`` one verified segment at a time.

    Create it with :func:`open_reader`. Reads past a failed segment keep raising.
    """

    def __init__(self, fileobj: BinaryIO, cipher: SegmentCipher, layout: Layout, close_fileobj: bool) -> None:
        super().__init__()
        self._file = fileobj
        self._cipher = cipher
        self._layout = layout
        self._close_fileobj = close_fileobj
        self._ct = bytearray(layout.segment_size + 1)  # one segment plus one byte of look-ahead
        self._ctv = memoryview(self._ct)
        self._carry = 0
        self._pt = memoryview(bytearray(layout.capacity))
        self._pos = self._end = 0
        self._index = 0
        self._done = self._failed = False

    def readable(self) -> bool:
        return True

    def _fill(self, want: int) -> int:
        got = self._carry
        reader = getattr(self._file, "readinto", None)
        while got < want:
            if reader is not None:
                n = reader(self._ctv[got:want])
            else:
                chunk = self._file.read(want - got)
                n = len(chunk)
                self._ctv[got : got + n] = chunk
            if not n:
                break
            got += n
        return got

    def _next_segment(self, target: memoryview) -> int:
        """Decrypt the next segment into ``target`` if it fits, else into the internal buffer."""
        if self._failed:
            raise DecryptionError()
        seg_len = self._layout.segment_size - (HEADER_SIZE if self._index == 0 else 0)
        got = self._fill(seg_len + 1)
        last = got <= seg_len
        ct_len = got if last else seg_len
        if ct_len < TAG_SIZE:
            self._failed = True
            raise DecryptionError()
        size = ct_len - TAG_SIZE
        direct = size <= len(target)
        dst = target[:size] if direct else self._pt[:size]
        try:
            self._cipher.open_into(self._index, last, self._ctv[:ct_len], dst)
        except DecryptionError:
            self._failed = True
            raise
        if last:
            self._done, self._carry = True, 0
        else:
            self._ct[0], self._carry = self._ct[seg_len], 1
        self._index += 1
        if direct:
            return size
        self._pos, self._end = 0, size
        return -1

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        """Fill ``buffer`` with verified plaintext; return 0 only at the verified end of stream.

        Raises:
            DecryptionError: the next segment does not verify.
        """
        self._checkClosed()
        out = as_view(buffer, "buffer")
        while self._pos == self._end:
            if self._done or not out:
                return 0
            direct = self._next_segment(out)
            if direct >= 0:  # decrypted straight into the caller's buffer (0 only at the end)
                return direct
        n = min(len(out), self._end - self._pos)
        out[:n] = self._pt[self._pos : self._pos + n]
        self._pos += n
        return n

    def readall(self) -> bytes:
        """Read to the verified end of stream."""
        chunks = bytearray()
        buf = memoryview(bytearray(self._layout.capacity))
        while n := self.readinto(buf):
            chunks += buf[:n]
        return bytes(chunks)

    def close(self) -> None:
        if not self.closed:
            self._pt[:] = bytes(len(self._pt))
            if self._close_fileobj:
                self._file.close()
        super().close()


def open_reader(
    key: Any,
    fileobj: BinaryIO,
    associated_data: Any,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    close_fileobj: bool = False,
) -> StreamReader:
    """Read the header from ``fileobj``; return a file object that decrypts the rest.

    Raises:
        DecryptionError: the header is short or malformed.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size.
    """
    layout = Layout.of(segment_size)
    key_bytes, ad = check_key(key), ad_bytes(associated_data)
    header = bytearray()
    while len(header) < HEADER_SIZE:
        chunk = fileobj.read(HEADER_SIZE - len(header))
        if not chunk:
            break
        header += chunk
    salt, prefix = parse_header(header)
    return StreamReader(fileobj, SegmentCipher(key_bytes, salt, prefix, ad), layout, close_fileobj)
