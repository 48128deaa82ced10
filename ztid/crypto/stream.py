"""Streaming AEAD in Tink's AES-GCM-HKDF format, byte for byte (one-shot, writer and reader).

Tink in any language decrypts what this module writes, and the reverse, given the same 32-byte
key, ``AES256_GCM_HKDF`` parameters (HKDF-SHA256, derived key size 32) and segment size::

    stream  = header ‖ segment_0 ‖ segment_1 ‖ … ‖ segment_{n-1}
    header  = 0x28 (its length, 40) ‖ salt (32 random bytes) ‖ nonce_prefix (7 random bytes)
    key_s   = HKDF-SHA256(ikm=key, salt=salt, info=associated_data, length=32)
    seg_i   = AES-256-GCM(key_s, nonce_i, plaintext_i, aad=b"")          (ciphertext ‖ 16-byte tag)
    nonce_i = nonce_prefix ‖ i (4 bytes, big-endian) ‖ (0x01 if i == n-1 else 0x00)

Every ciphertext segment is ``segment_size`` bytes except the last; segment 0 shares its
``segment_size`` with the header, so it holds ``segment_size - 56`` plaintext bytes and later ones
``segment_size - 16`` (Tink's ``ciphertextOffset`` is 0). No empty trailing segment is written; one
is accepted. At most 2**32 - 1 segments. There is no nonce or salt parameter: both are random.

Any failure to decrypt (wrong key or associated data, truncation, reordered, duplicated or spliced
segments, a flipped last-segment flag, a bad header) raises ``DecryptionError("decryption failed")``.
No plaintext is handed out before its segment's tag has verified; :func:`decrypt` hands out nothing
unless every segment verified. The reader hands out each segment once it verified, so a consumer
must not act on a prefix before the reader reports end of stream without error.
"""

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
    as_view,
    build_header,
    check_key,
    parse_header,
)
from ztid.errors import DecryptionError, UsageError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "StreamReader",
    "StreamWriter",
    "ciphertext_size",
    "decrypt",
    "decrypt_into",
    "encrypt",
    "encrypt_into",
    "open_reader",
    "open_writer",
    "plaintext_size",
]


def _ad_bytes(associated_data: Any) -> bytes:
    return bytes(as_view(associated_data, "associated_data"))


def ciphertext_size(plaintext_size: int, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size of the stream that encrypts ``plaintext_size`` bytes.

    Raises:
        UsageError: bad segment size, or more than 2**32 - 1 segments.
    """
    return Layout.of(segment_size).ciphertext_size(plaintext_size)


def plaintext_size(ciphertext_size: int, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size of the plaintext inside a stream of ``ciphertext_size`` bytes.

    Raises:
        UsageError: bad segment size.
        DecryptionError: no stream has that length.
    """
    return Layout.of(segment_size).plaintext_size(ciphertext_size)


def _seal_all(cipher: SegmentCipher, layout: Layout, header: bytes, pt: memoryview, out: memoryview) -> int:
    count = layout.segments_for(len(pt))
    total = HEADER_SIZE + len(pt) + TAG_SIZE * count
    if len(out) < total:
        raise UsageError(f"output buffer holds {len(out)} bytes; the ciphertext needs {total}")
    out[:HEADER_SIZE] = header
    for index in range(count):
        start = layout.plaintext_start(index)
        end = min(len(pt), start + (layout.first_capacity if index == 0 else layout.capacity))
        at = layout.ciphertext_start(index)
        cipher.seal_into(index, index == count - 1, pt[start:end], out[at : at + end - start + TAG_SIZE])
    return total


def _encrypt_with(
    key: Any, plaintext: Any, associated_data: Any, *, segment_size: int, salt: bytes, nonce_prefix: bytes
) -> bytes:
    """Encrypt with a chosen salt and nonce prefix: for golden tests only, never for data."""
    if len(salt) != KEY_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
        raise UsageError("salt must be 32 bytes and nonce_prefix 7 bytes")
    layout = Layout.of(segment_size)
    cipher = SegmentCipher(check_key(key), salt, nonce_prefix, _ad_bytes(associated_data))
    pt = as_view(plaintext, "plaintext")
    out = bytearray(layout.ciphertext_size(len(pt)))
    _seal_all(cipher, layout, build_header(salt, nonce_prefix), pt, memoryview(out))
    return bytes(out)


def encrypt_into(
    key: Any, plaintext: Any, associated_data: Any, out: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> int:
    """Encrypt ``plaintext`` into the caller's buffer ``out``; return the bytes written.

    ``out`` must hold :func:`ciphertext_size` bytes and must not overlap ``plaintext``. This is the
    copy-free path for bulk data: reuse ``out`` across calls.

    Raises:
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size, ``out`` too small, or too many segments.
    """
    layout = Layout.of(segment_size)
    salt, prefix = os.urandom(KEY_SIZE), os.urandom(NONCE_PREFIX_SIZE)
    cipher = SegmentCipher(check_key(key), salt, prefix, _ad_bytes(associated_data))
    return _seal_all(cipher, layout, build_header(salt, prefix), as_view(plaintext, "plaintext"), as_view(out, "out"))


def encrypt(key: Any, plaintext: Any, associated_data: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Encrypt ``plaintext`` (bytes-like) bound to ``associated_data``; return the whole stream.

    Raises:
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size or too many segments.
    """
    pt = as_view(plaintext, "plaintext")
    out = bytearray(ciphertext_size(len(pt), segment_size=segment_size))
    encrypt_into(key, pt, associated_data, out, segment_size=segment_size)
    return bytes(out)


def decrypt_into(
    key: Any, ciphertext: Any, associated_data: Any, out: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> int:
    """Decrypt a whole stream into the caller's buffer ``out``; return the plaintext size.

    On failure the written part of ``out`` is zeroed before the error is raised.

    Raises:
        DecryptionError: anything about the stream, key or associated data is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size, or ``out`` smaller than :func:`plaintext_size`.
    """
    layout = Layout.of(segment_size)
    ct = as_view(ciphertext, "ciphertext")
    count = layout.segments_in(len(ct))
    size = len(ct) - HEADER_SIZE - TAG_SIZE * count
    dst = as_view(out, "out")
    if len(dst) < size:
        raise UsageError(f"output buffer holds {len(dst)} bytes; the plaintext needs {size}")
    salt, prefix = parse_header(ct[:HEADER_SIZE])
    cipher = SegmentCipher(check_key(key), salt, prefix, _ad_bytes(associated_data))
    try:
        for index in range(count):
            start = layout.ciphertext_start(index)
            end = min(len(ct), (index + 1) * layout.segment_size)
            at = layout.plaintext_start(index)
            cipher.open_into(index, index == count - 1, ct[start:end], dst[at : at + end - start - TAG_SIZE])
    except DecryptionError:
        dst[:size] = bytes(size)
        raise
    return size


def decrypt(key: Any, ciphertext: Any, associated_data: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Decrypt a whole stream; return the plaintext only if every segment verified.

    Raises:
        DecryptionError: anything about the stream, key or associated data is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size.
    """
    ct = as_view(ciphertext, "ciphertext")
    out = bytearray(Layout.of(segment_size).plaintext_size(len(ct)))
    decrypt_into(key, ct, associated_data, out, segment_size=segment_size)
    return bytes(out)


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

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
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
    cipher = SegmentCipher(check_key(key), salt, prefix, _ad_bytes(associated_data))
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
    key_bytes, ad = check_key(key), _ad_bytes(associated_data)
    header = bytearray()
    while len(header) < HEADER_SIZE:
        chunk = fileobj.read(HEADER_SIZE - len(header))
        if not chunk:
            break
        header += chunk
    salt, prefix = parse_header(header)
    return StreamReader(fileobj, SegmentCipher(key_bytes, salt, prefix, ad), layout, close_fileobj)
