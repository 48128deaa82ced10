"""Sealed files: a small versioned header naming the file and its wrapped key, then a Tink-format stream.

Layout (all integers big-endian)::

    magic        4   b"ZTID"
    version      1   1
    header_len   4   total header bytes, magic included; the stream starts here
    segment_size 4   the stream's ciphertext segment size
    key_version  4   version of the key-encryption key that wrapped the data key (>= 1)
    dataset      2+n UTF-8, 1..255 bytes of [A-Za-z0-9._-]
    name         2+n UTF-8, 1..1024 bytes: the file's relative path in the dataset ("/"-separated,
                     no empty, "." or ".." parts, no control characters or backslashes)
    key_id       2+n UTF-8, 1..255 bytes of [A-Za-z0-9._-]
    wrapped_key  2+n 1..4096 bytes, as the key backend returned them
    stream           Tink AES-GCM-HKDF streaming ciphertext under the data key

The stream's associated data is ``b"ztid-sealed/v1\\0" ‖ segment_size ‖ dataset ‖ name ‖ key_id``
(each string length-prefixed), so every field but the wrapped key and its KEK version is
authenticated by the data itself; those two change when the key is rewrapped, and the wrapped key
authenticates itself (its own AEAD, bound to the dataset and KEK version, see ``ztid.crypto.keys``).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ztid.crypto import stream
from ztid._atomic import atomic_file
from ztid.crypto._format import DEFAULT_SEGMENT_SIZE, Layout, check_key
from ztid.crypto.random_access import RandomAccessDecryptor, SeekableReader
from ztid.errors import CryptoError, SealedFormatError, UsageError

__all__ = ["MAGIC", "SealedHeader", "open_sealed", "parse_header", "read_header", "rewrap_file", "seal_file"]

MAGIC = b"ZTID"
VERSION = 1
_FIXED = struct.Struct(">4sBIII")  # magic, version, header_len, segment_size, key_version
_MAX_HEADER = 1 << 16
_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")
_AD_LABEL = b"ztid-sealed/v1\0"


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value) or value in (".", ".."):
        raise SealedFormatError(f"sealed header: {what} must be 1-255 characters of [A-Za-z0-9._-], got {value!r}")
    return value


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.encode("utf-8", "surrogatepass")) <= 1024:
        raise SealedFormatError(f"sealed header: name must be 1-1024 bytes of UTF-8, got {value!r}")
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in value) or any(
        part in ("", ".", "..") for part in value.split("/")
    ):
        raise SealedFormatError(f"sealed header: name must be a relative '/'-separated path without '.', '..' "
                          f"or empty parts, control characters or backslashes, got {value!r}")
    return value


def _lp(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


@dataclass(frozen=True, slots=True)
class SealedHeader:
    """The parsed header of a sealed file. Build one with :meth:`new`; parse with :func:`read_header`."""

    dataset: str
    name: str
    key_id: str
    key_version: int
    wrapped_key: bytes
    segment_size: int
    version: int = VERSION

    @classmethod
    def new(cls, *, dataset: str, name: str, key_id: str, key_version: int, wrapped_key: bytes,
            segment_size: int = DEFAULT_SEGMENT_SIZE) -> "SealedHeader":
        """Validate every field.

        Raises:
            SealedFormatError: a field breaks its rule (the message names it and quotes the value).
        """
        _check_id(dataset, "dataset")
        _check_name(name)
        _check_id(key_id, "key_id")
        if type(key_version) is not int or not 1 <= key_version < 2**32:
            raise SealedFormatError(f"sealed header: key_version must be an int in [1, 2**32), got {key_version!r}")
        if not isinstance(wrapped_key, bytes) or not 1 <= len(wrapped_key) <= 4096:
            raise SealedFormatError("sealed header: wrapped_key must be 1-4096 bytes")
        try:
            Layout.of(segment_size)
        except UsageError as exc:
            raise SealedFormatError(f"sealed header: {exc}") from exc
        return cls(dataset, name, key_id, key_version, wrapped_key, segment_size)

    def to_bytes(self) -> bytes:
        """The header's bytes, exactly as written before the stream."""
        body = b"".join(_lp(s.encode()) for s in (self.dataset, self.name, self.key_id)) + _lp(self.wrapped_key)
        length = _FIXED.size + len(body)
        return _FIXED.pack(MAGIC, self.version, length, self.segment_size, self.key_version) + body

    @property
    def length(self) -> int:
        """Header size in bytes: where the stream starts."""
        return len(self.to_bytes())

    def associated_data(self) -> bytes:
        """The stream's associated data: everything but the wrapped key and its KEK version."""
        fields = b"".join(_lp(s.encode()) for s in (self.dataset, self.name, self.key_id))
        return _AD_LABEL + struct.pack(">I", self.segment_size) + fields

    def rewrapped(self, key_version: int, wrapped_key: bytes) -> "SealedHeader":
        """The same header with a new wrapped key (same data key) and KEK version."""
        return SealedHeader.new(**{**self._fields(), "key_version": key_version, "wrapped_key": wrapped_key})

    def _fields(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "name": self.name, "key_id": self.key_id, "key_version": self.key_version,
                "wrapped_key": self.wrapped_key, "segment_size": self.segment_size}


def parse_header(data: bytes) -> SealedHeader:
    """Parse exactly one header (``data`` must be the whole header, nothing more).

    Raises:
        SealedFormatError: bad magic, version, lengths or field values.
    """
    if len(data) < _FIXED.size:
        raise SealedFormatError(f"sealed header: {len(data)} bytes is shorter than the fixed part ({_FIXED.size})")
    magic, version, length, segment_size, key_version = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise SealedFormatError(f"sealed header: magic must be b'ZTID', got {magic!r}")
    if version != VERSION:
        raise SealedFormatError(f"sealed header: unsupported version {version} (this ztid reads version {VERSION})")
    if length != len(data):
        raise SealedFormatError(f"sealed header: header_len says {length}, the header has {len(data)} bytes")
    pos, fields = _FIXED.size, []
    for what in ("dataset", "name", "key_id", "wrapped_key"):
        if pos + 2 > len(data):
            raise SealedFormatError(f"sealed header: {what} length runs past the header")
        (size,) = struct.unpack_from(">H", data, pos)
        if pos + 2 + size > len(data):
            raise SealedFormatError(f"sealed header: {what} ({size} bytes) runs past the header")
        fields.append(bytes(data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    if pos != len(data):
        raise SealedFormatError(f"sealed header: {len(data) - pos} unexpected bytes after the wrapped key")
    try:
        dataset, name, key_id = (f.decode("utf-8") for f in fields[:3])
    except UnicodeDecodeError as exc:
        raise SealedFormatError(f"sealed header: a name field is not UTF-8: {exc.object[exc.start:exc.end]!r}") from exc
    header = SealedHeader.new(dataset=dataset, name=name, key_id=key_id, key_version=key_version,
                              wrapped_key=fields[3], segment_size=segment_size)
    return header


def _read_exact(f: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = f.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_header(f: BinaryIO) -> SealedHeader:
    """Read and parse the header at the current position of ``f`` (left just after it).

    Raises:
        SealedFormatError: the header is malformed or the file ends inside it.
    """
    fixed = _read_exact(f, _FIXED.size)
    if len(fixed) < _FIXED.size:
        raise SealedFormatError(f"sealed header: file ends after {len(fixed)} bytes, inside the fixed part")
    magic, version, length, _, _ = _FIXED.unpack(fixed)
    if magic != MAGIC or version != VERSION:
        return parse_header(fixed)  # raises, naming the bad magic or version
    if not _FIXED.size <= length <= _MAX_HEADER:
        raise SealedFormatError(f"sealed header: header_len {length} is outside [{_FIXED.size}, {_MAX_HEADER}]")
    rest = _read_exact(f, length - _FIXED.size)
    if len(rest) != length - _FIXED.size:
        raise SealedFormatError(f"sealed header: file ends inside the {length}-byte header")
    return parse_header(fixed + rest)


def seal_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, data_key: bytes, wrapped_key: bytes,
              dataset: str, name: str, key_id: str, key_version: int,
              segment_size: int = DEFAULT_SEGMENT_SIZE) -> SealedHeader:
    """Encrypt file ``src`` into sealed file ``dst`` (written atomically); return its header.

    Raises:
        CryptoError: a header field is invalid (KeyringError for a bad data key).
        UsageError: ``src`` cannot be read or ``dst`` written.
    """
    header = SealedHeader.new(dataset=dataset, name=name, key_id=key_id, key_version=key_version,
                              wrapped_key=wrapped_key, segment_size=segment_size)
    key = check_key(data_key)
    dst_path = Path(dst)
    try:
        with open(src, "rb") as fin:
            with atomic_file(dst_path) as fout:  # ciphertext: readable like any data file
                fout.write(header.to_bytes())
                buf = memoryview(bytearray(min(segment_size, 8 << 20)))
                with stream.open_writer(key, fout, header.associated_data(), segment_size=segment_size) as w:
                    while n := fin.readinto(buf):
                        w.write(buf[:n])
    except OSError as exc:
        raise UsageError(f"cannot seal {os.fspath(src)!r} into {os.fspath(dst)!r}: {exc.strerror or exc}") from exc
    return header


def open_sealed(path: str | os.PathLike[str], data_key: bytes, *, dataset: str | None = None,
                name: str | None = None) -> SeekableReader:
    """Open a sealed file for seekable, verified reading (close the reader to close the file).

    ``dataset``/``name``, when given, must match the (then authenticated) header, so a sealed
    file cannot be passed off as another one.

    Raises:
        CryptoError: malformed header, or it names another dataset or file.
        DecryptionError: wrong data key, or the file was tampered with or truncated.
        UsageError: the file cannot be opened.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot open sealed file {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    try:
        header = read_header(f)
        dec = RandomAccessDecryptor(data_key, f, header.associated_data(), segment_size=header.segment_size,
                                    start=header.length, close_fileobj=True)
    except BaseException:
        f.close()
        raise
    for what, want, got in (("dataset", dataset, header.dataset), ("name", name, header.name)):
        if want is not None and want != got:
            dec.close()
            raise CryptoError(f"sealed file {os.fspath(path)!r} is {what} {got!r}, expected {want!r}")
    return SeekableReader(dec, close_decryptor=True)


def rewrap_file(path: str | os.PathLike[str], backend: Any) -> SealedHeader:
    """Rewrap a sealed file's data key to ``backend``'s newest KEK version; the stream bytes are kept.

    The data key and the stream do not change; only the header's wrapped key and key version do.
    The file is rewritten atomically (new header, then the stream copied unchanged).

    Raises:
        CryptoError: malformed header (KeyringError/DecryptionError from the backend).
        UsageError: the file cannot be read or written.
    """
    from ztid.crypto.keys import dek_context

    target = Path(path)
    try:
        with open(target, "rb") as fin:
            header = read_header(fin)
            version, wrapped = backend.rewrap(header.key_id, header.key_version, header.wrapped_key,
                                              context=dek_context(header.dataset))
            new = header.rewrapped(version, wrapped)
            if new == header:
                return header
            with atomic_file(target, mode=os.fstat(fin.fileno()).st_mode & 0o777) as fout:  # keep its mode
                fout.write(new.to_bytes())
                buf = memoryview(bytearray(8 << 20))
                while n := fin.readinto(buf):
                    fout.write(buf[:n])
    except OSError as exc:
        raise UsageError(f"cannot rewrap {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    return new

