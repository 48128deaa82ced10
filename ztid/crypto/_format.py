"""The Tink AES-GCM-HKDF streaming layout: segment arithmetic, header, per-stream key and segment sealing.

Everything here is internal to :mod:`ztid.crypto`; the byte format is described in
:mod:`ztid.crypto.stream` and ``docs/crypto-format.md``. Positions are in *stream* coordinates:
byte 0 is the header's length byte (Tink's ``ciphertextOffset`` is 0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ztid.errors import DecryptionError, KeyringError, UsageError

KEY_SIZE = 32  # Tink DerivedKeySize for AES256_GCM_HKDF_*; also the minimum input key size
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
HEADER_SIZE = 1 + KEY_SIZE + NONCE_PREFIX_SIZE  # 40: length byte ‖ salt ‖ nonce prefix
MIN_SEGMENT_SIZE = HEADER_SIZE + TAG_SIZE + 1  # Tink: CiphertextSegmentSize > DerivedKeySize + 24
MAX_SEGMENT_SIZE = 2**31 - 1
DEFAULT_SEGMENT_SIZE = 1 << 20
# The segment index is 4 bytes in the nonce; never let it wrap (Tink advisory "Streaming AEAD overflow").
_MAX_SEGMENTS = 2**32 - 1

_NONCE_TAIL = struct.Struct(">IB")


def as_view(data: Any, what: str) -> memoryview:
    """Return a flat, byte-format memoryview of ``data`` (no copy).

    Raises:
        UsageError: ``data`` is not a contiguous bytes-like object.
    """
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise UsageError(f"{what} must be bytes-like, got {type(data).__name__}") from exc
    if not view.c_contiguous:
        raise UsageError(f"{what} must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def ad_bytes(associated_data: Any) -> bytes:
    """The associated data as bytes (it goes into HKDF's info).

    Raises:
        UsageError: not bytes-like.
    """
    return bytes(as_view(associated_data, "associated_data"))


def check_key(key: Any) -> bytes:
    """Return the input key as bytes.

    Raises:
        KeyringError: the key is not bytes-like or shorter than 32 bytes.
    """
    if isinstance(key, (str, int)):
        raise KeyringError(f"stream key must be bytes, got {type(key).__name__}")
    try:
        raw = bytes(key)
    except TypeError as exc:
        raise KeyringError(f"stream key must be bytes, got {type(key).__name__}") from exc
    if len(raw) < KEY_SIZE:
        raise KeyringError(f"stream key must be at least {KEY_SIZE} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class Layout:
    """Segment arithmetic for one ciphertext segment size (Tink ``CiphertextSegmentSize``)."""

    segment_size: int

    @classmethod
    def of(cls, segment_size: Any) -> "Layout":
        """Validate a segment size.

        Raises:
            UsageError: not an int in [57, 2**31 - 1].
        """
        if type(segment_size) is not int or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise UsageError(
                f"segment_size must be an int in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}], got {segment_size!r}"
            )
        return cls(segment_size)

    @property
    def first_capacity(self) -> int:
        """Plaintext bytes in segment 0 (it shares its ciphertext segment with the header)."""
        return self.segment_size - HEADER_SIZE - TAG_SIZE

    @property
    def capacity(self) -> int:
        """Plaintext bytes in every later full segment."""
        return self.segment_size - TAG_SIZE

    def segments_for(self, plaintext_size: int) -> int:
        """Number of segments Tink writes for ``plaintext_size`` bytes (no empty trailing segment).

        Raises:
            UsageError: more than 2**32 - 1 segments would be needed.
        """
        if plaintext_size <= self.first_capacity:
            count = 1
        else:
            count = 1 + -(-(plaintext_size - self.first_capacity) // self.capacity)
        if count > _MAX_SEGMENTS:
            raise UsageError(
                f"plaintext of {plaintext_size} bytes needs {count} segments; the limit is {_MAX_SEGMENTS} "
                f"(use a larger segment_size)"
            )
        return count

    def ciphertext_size(self, plaintext_size: int) -> int:
        """Total stream size (header included) for ``plaintext_size`` bytes of plaintext."""
        return HEADER_SIZE + plaintext_size + TAG_SIZE * self.segments_for(plaintext_size)

    def segments_in(self, ciphertext_size: int) -> int:
        """Number of segments in a stream of ``ciphertext_size`` bytes, from its length alone.

        A last segment holding only a tag (an empty final segment) is accepted, as Tink does.

        Raises:
            DecryptionError: no valid stream has this length.
        """
        if ciphertext_size < HEADER_SIZE + TAG_SIZE:
            raise DecryptionError()
        full, rest = divmod(ciphertext_size, self.segment_size)
        if rest == 0:
            count = full
        elif rest < TAG_SIZE:
            raise DecryptionError()
        else:
            count = full + 1
        if count > _MAX_SEGMENTS:
            raise DecryptionError()
        return count

    def plaintext_size(self, ciphertext_size: int) -> int:
        """Plaintext size of a stream of ``ciphertext_size`` bytes.

        Raises:
            DecryptionError: no valid stream has this length.
        """
        return ciphertext_size - HEADER_SIZE - TAG_SIZE * self.segments_in(ciphertext_size)

    def ciphertext_start(self, index: int) -> int:
        """Stream offset of segment ``index``'s first ciphertext byte."""
        return HEADER_SIZE if index == 0 else index * self.segment_size

    def plaintext_start(self, index: int) -> int:
        """Plaintext offset of segment ``index``'s first byte."""
        return 0 if index == 0 else self.first_capacity + (index - 1) * self.capacity

    def segment_of(self, plaintext_offset: int) -> int:
        """Index of the segment holding plaintext byte ``plaintext_offset``."""
        if plaintext_offset < self.first_capacity:
            return 0
        return 1 + (plaintext_offset - self.first_capacity) // self.capacity


def build_header(salt: bytes, nonce_prefix: bytes) -> bytes:
    """Header = length byte (40) ‖ salt (32) ‖ nonce prefix (7)."""
    return bytes((HEADER_SIZE,)) + salt + nonce_prefix


def parse_header(header: Any) -> tuple[bytes, bytes]:
    """Return (salt, nonce_prefix) from a 40-byte header.

    Raises:
        DecryptionError: the length byte is not 40 or the header is short.
    """
    raw = bytes(header)
    if len(raw) != HEADER_SIZE or raw[0] != HEADER_SIZE:
        raise DecryptionError()
    return raw[1 : 1 + KEY_SIZE], raw[1 + KEY_SIZE :]


class SegmentCipher:
    """AES-256-GCM under the per-stream key HKDF-SHA256(ikm=key, salt=salt, info=associated_data)."""

    __slots__ = ("_aead", "_prefix")

    def __init__(self, key: bytes, salt: bytes, nonce_prefix: bytes, associated_data: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=associated_data).derive(key)
        self._aead = AESGCM(derived)
        self._prefix = nonce_prefix

    def nonce(self, index: int, last: bool) -> bytes:
        """Nonce = prefix (7) ‖ index (4, big-endian) ‖ last flag (1)."""
        if not 0 <= index < _MAX_SEGMENTS:
            raise UsageError(f"segment index {index} is past the limit of {_MAX_SEGMENTS} segments")
        return self._prefix + _NONCE_TAIL.pack(index, 1 if last else 0)

    def seal_into(self, index: int, last: bool, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt one segment into ``out`` (exactly ``len(plaintext) + 16`` bytes)."""
        self._aead.encrypt_into(self.nonce(index, last), plaintext, None, out)

    def open_into(self, index: int, last: bool, ciphertext: memoryview, out: memoryview) -> None:
        """Decrypt one segment into ``out`` (exactly ``len(ciphertext) - 16`` bytes).

        ``decrypt_into`` writes plaintext before it checks the tag, so ``out`` is zeroed on failure.

        Raises:
            DecryptionError: the tag does not verify.
        """
        if not 0 <= index < _MAX_SEGMENTS:
            raise DecryptionError()
        try:
            self._aead.decrypt_into(self.nonce(index, last), ciphertext, None, out)
        except InvalidTag as exc:
            out[:] = bytes(len(out))
            raise DecryptionError() from exc
