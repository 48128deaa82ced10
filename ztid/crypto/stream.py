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

import os
from typing import Any

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
from ztid.crypto._stream_io import StreamReader, StreamWriter, open_reader, open_writer
from ztid.crypto._parallel import check_threads, filled_bytes, run_parts, zero
from ztid.errors import UsageError

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


def _split(count: int, threads: int) -> list[range]:
    """``range(count)`` cut into at most ``threads`` contiguous runs of at least 2 segments each."""
    n = max(1, min(threads, count // 2))
    return [range(count * k // n, count * (k + 1) // n) for k in range(n)]


def _seal_all(cipher: SegmentCipher, layout: Layout, header: bytes, pt: memoryview, out: memoryview,
              threads: int = 1) -> int:
    count = layout.segments_for(len(pt))
    total = HEADER_SIZE + len(pt) + TAG_SIZE * count
    if len(out) < total:
        raise UsageError(f"output buffer holds {len(out)} bytes; the ciphertext needs {total}")
    out[:HEADER_SIZE] = header

    def seal(indices: range) -> None:
        for index in indices:
            start = layout.plaintext_start(index)
            end = min(len(pt), start + (layout.first_capacity if index == 0 else layout.capacity))
            at = layout.ciphertext_start(index)
            cipher.seal_into(index, index == count - 1, pt[start:end], out[at : at + end - start + TAG_SIZE])

    run_parts([lambda r=r: seal(r) for r in _split(count, threads)])
    return total


def _encrypt_with(
    key: Any, plaintext: Any, associated_data: Any, *, segment_size: int, salt: bytes, nonce_prefix: bytes
) -> bytes:
    """Encrypt with a chosen salt and nonce prefix: for golden tests only, never for data."""
    if len(salt) != KEY_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
        raise UsageError("salt must be 32 bytes and nonce_prefix 7 bytes")
    layout = Layout.of(segment_size)
    cipher = SegmentCipher(check_key(key), salt, nonce_prefix, ad_bytes(associated_data))
    pt = as_view(plaintext, "plaintext")
    out = bytearray(layout.ciphertext_size(len(pt)))
    _seal_all(cipher, layout, build_header(salt, nonce_prefix), pt, memoryview(out))
    return bytes(out)


def encrypt_into(
    key: Any, plaintext: Any, associated_data: Any, out: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
    threads: int | None = 1,
) -> int:
    """Encrypt ``plaintext`` into the caller's buffer ``out``; return the bytes written.

    ``out`` must hold :func:`ciphertext_size` bytes and must not overlap ``plaintext``. This is the
    copy-free path for bulk data: reuse ``out`` across calls. ``threads`` > 1 seals contiguous runs
    of segments in a per-process thread pool (``None``: the CPUs available, at most 4); the
    bytes are the same for any value.

    Raises:
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size, ``out`` too small, too many segments, or bad threads.
    """
    threads = check_threads(threads)
    layout = Layout.of(segment_size)
    salt, prefix = os.urandom(KEY_SIZE), os.urandom(NONCE_PREFIX_SIZE)
    cipher = SegmentCipher(check_key(key), salt, prefix, ad_bytes(associated_data))
    return _seal_all(cipher, layout, build_header(salt, prefix), as_view(plaintext, "plaintext"), as_view(out, "out"),
                     threads)


def encrypt(key: Any, plaintext: Any, associated_data: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Encrypt ``plaintext`` (bytes-like) bound to ``associated_data``; return the whole stream.

    Raises:
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size or too many segments.
    """
    pt = as_view(plaintext, "plaintext")
    return filled_bytes(ciphertext_size(len(pt), segment_size=segment_size),
                        lambda out: encrypt_into(key, pt, associated_data, out, segment_size=segment_size))


def decrypt_into(
    key: Any, ciphertext: Any, associated_data: Any, out: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
    threads: int | None = 1,
) -> int:
    """Decrypt a whole stream into the caller's buffer ``out``; return the plaintext size.

    On failure the plaintext part of ``out`` is zeroed before the error is raised. ``threads`` > 1
    decrypts contiguous runs of segments in a per-process thread pool (``None``: the CPUs
    available, at most 4); the call returns only once every run has finished and verified.

    Raises:
        DecryptionError: anything about the stream, key or associated data is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size, bad threads, or ``out`` smaller than :func:`plaintext_size`.
    """
    threads = check_threads(threads)
    key_bytes, layout = check_key(key), Layout.of(segment_size)
    ct = as_view(ciphertext, "ciphertext")
    count = layout.segments_in(len(ct))
    size = len(ct) - HEADER_SIZE - TAG_SIZE * count
    dst = as_view(out, "out")
    if len(dst) < size:
        raise UsageError(f"output buffer holds {len(dst)} bytes; the plaintext needs {size}")
    salt, prefix = parse_header(ct[:HEADER_SIZE])
    cipher = SegmentCipher(key_bytes, salt, prefix, ad_bytes(associated_data))

    def open_run(indices: range) -> None:
        for index in indices:
            start = layout.ciphertext_start(index)
            end = min(len(ct), (index + 1) * layout.segment_size)
            at = layout.plaintext_start(index)
            cipher.open_into(index, index == count - 1, ct[start:end], dst[at : at + end - start - TAG_SIZE])

    try:
        run_parts([lambda r=r: open_run(r) for r in _split(count, threads)])
    except BaseException:
        zero(dst[:size])
        raise
    return size


def decrypt(key: Any, ciphertext: Any, associated_data: Any, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Decrypt a whole stream; return the plaintext only if every segment verified.

    Raises:
        DecryptionError: anything about the stream, key or associated data is wrong.
        KeyringError: the key is shorter than 32 bytes.
        UsageError: bad segment size.
    """
    check_key(key)
    ct = as_view(ciphertext, "ciphertext")
    return filled_bytes(Layout.of(segment_size).plaintext_size(len(ct)),
                        lambda out: decrypt_into(key, ct, associated_data, out, segment_size=segment_size))
