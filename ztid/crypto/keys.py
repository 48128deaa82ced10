"""Key-encryption keys (KEKs): a versioned local keyring file that wraps, unwraps and rewraps data keys.

Lifecycle, after Vault transit: a key id has versions 1..n; the newest wraps; any version at or
above ``min_decrypt_version`` unwraps; versions below it are archived (refused with their own
message). ``rotate`` adds a version; ``rewrap`` moves a wrapped data key to the newest version
without exposing it; raise ``min_decrypt_version`` only after rewrapping. Each version counts its
wraps and refuses past 2**31 (random 96-bit nonces, NIST SP 800-38D), asking for a rotation.

A wrapped data key is ``nonce (12) ‖ AES-256-GCM(kek_v, dek)`` with associated data
``b"ztid-kek/v1\\0" ‖ key_id ‖ version ‖ context``: the KEK version and the caller's context (for
sealed files, the dataset) are bound in, so a wrapped key cannot be relabelled or moved.

The keyring file is JSON, mode 0600 (loading refuses a group- or other-accessible file), rewritten
atomically under an advisory lock so that concurrent processes do not lose updates.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import struct
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ztid._atomic import write_atomic
from ztid.errors import DecryptionError, KeyringError

__all__ = ["DEK_SIZE", "KekBackend", "Keyring", "Wrapped", "dek_context", "new_data_key"]

DEK_SIZE = 32
FORMAT = "ztid-keyring/v1"
MAX_WRAPS = 2**31
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")
_AD_LABEL = b"ztid-kek/v1\0"


class Wrapped(NamedTuple):
    """A data key wrapped by KEK ``version``."""

    version: int
    wrapped: bytes


@runtime_checkable
class KekBackend(Protocol):
    """What a key-encryption-key service offers: the local :class:`Keyring`, Vault transit, a cloud KMS."""

    def wrap(self, key_id: str, dek: bytes, *, context: bytes = b"") -> Wrapped:
        """Wrap ``dek`` with the newest version of ``key_id``."""
        ...

    def unwrap(self, key_id: str, version: int, wrapped: bytes, *, context: bytes = b"") -> bytes:
        """Return the data key, if ``version`` may still decrypt."""
        ...

    def rewrap(self, key_id: str, version: int, wrapped: bytes, *, context: bytes = b"") -> Wrapped:
        """Re-wrap to the newest version without handing the data key out."""
        ...


def new_data_key() -> bytes:
    """A fresh 32-byte data encryption key (DEK)."""
    return os.urandom(DEK_SIZE)


def dek_context(dataset: str) -> bytes:
    """The wrapping context of a dataset's data key (binds the wrapped key to the dataset)."""
    return b"ztid-dek/v1\0" + dataset.encode("utf-8")


def _check_key_id(key_id: Any) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyringError(f"key id must be 1-255 characters of [A-Za-z0-9._-], got {key_id!r}")
    return key_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _aad(key_id: str, version: int, context: bytes) -> bytes:
    raw = key_id.encode()
    return _AD_LABEL + struct.pack(">H", len(raw)) + raw + struct.pack(">I", version) + bytes(context)


class Keyring:
    """A local, versioned keyring file of 32-byte KEKs. Implements :class:`KekBackend`."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self._doc = doc

    # -- file handling ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, key_ids: tuple[str, ...] = ("default",)) -> "Keyring":
        """Create a new keyring file (0600) holding version 1 of each key id.

        Raises:
            KeyringError: the file exists, a key id is invalid, or the file cannot be written.
        """
        target = Path(path)
        doc: dict[str, Any] = {"format": FORMAT, "keys": {}}
        for key_id in key_ids:
            doc["keys"][_check_key_id(key_id)] = {"min_decrypt_version": 1, "versions": {"1": _new_version()}}
        ring = cls(target, doc)
        with ring._locked():
            if target.exists():
                raise KeyringError(f"keyring {os.fspath(target)!r} already exists")
            ring._save()
        return ring

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Keyring":
        """Load a keyring file, refusing one that group or others can access.

        Raises:
            KeyringError: unreadable, loose permissions, or malformed (the message names the field).
        """
        ring = cls(Path(path), {})
        ring._doc = ring._read()
        return ring

    def _read(self) -> dict[str, Any]:
        where = os.fspath(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyringError(f"cannot open keyring {where!r}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise KeyringError(f"keyring {where!r} is accessible by group or others (mode {mode & 0o777:04o}); "
                                   "run: chmod 600 " + where)
            raw = f.read()
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyringError(f"keyring {where!r} is not valid JSON: {exc}") from exc
        _validate(doc, where)
        return doc

    def _save(self) -> None:
        try:
            write_atomic(self.path, (json.dumps(self._doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
        except OSError as exc:
            raise KeyringError(f"cannot write keyring {os.fspath(self.path)!r}: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyringError(f"cannot lock keyring {os.fspath(self.path)!r}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """Re-read under the lock, let the caller change the document, write it back atomically."""
        with self._locked():
            self._doc = self._read()
            yield self._doc
            self._save()

    # -- queries ---------------------------------------------------------------------------------
    def _entry(self, key_id: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        entry = (doc or self._doc)["keys"].get(_check_key_id(key_id))
        if entry is None:
            raise KeyringError(f"unknown key id {key_id!r} in keyring {os.fspath(self.path)!r}")
        return entry

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._doc["keys"]))

    def versions(self, key_id: str) -> tuple[int, ...]:
        """Every version of ``key_id``, oldest first (archived ones included)."""
        return tuple(sorted(int(v) for v in self._entry(key_id)["versions"]))

    def primary_version(self, key_id: str) -> int:
        """The version that wraps: the newest."""
        return self.versions(key_id)[-1]

    def min_decrypt_version(self, key_id: str) -> int:
        return int(self._entry(key_id)["min_decrypt_version"])

    # -- lifecycle -------------------------------------------------------------------------------
    def add_key(self, key_id: str) -> None:
        """Add a new key id at version 1.

        Raises:
            KeyringError: it exists already or the id is invalid.
        """
        _check_key_id(key_id)
        with self._update() as doc:
            if key_id in doc["keys"]:
                raise KeyringError(f"key id {key_id!r} already exists")
            doc["keys"][key_id] = {"min_decrypt_version": 1, "versions": {"1": _new_version()}}

    def rotate(self, key_id: str) -> int:
        """Add a new newest version of ``key_id``; return it."""
        with self._update() as doc:
            entry = self._entry(key_id, doc)
            version = max(int(v) for v in entry["versions"]) + 1
            entry["versions"][str(version)] = _new_version()
        return version

    def set_min_decrypt_version(self, key_id: str, version: int) -> None:
        """Archive every version below ``version`` (rewrap first: archived versions cannot unwrap).

        Raises:
            KeyringError: ``version`` is not in [1, newest].
        """
        with self._update() as doc:
            entry = self._entry(key_id, doc)
            newest = max(int(v) for v in entry["versions"])
            if type(version) is not int or not 1 <= version <= newest:
                raise KeyringError(f"min_decrypt_version for {key_id!r} must be in [1, {newest}], got {version!r}")
            entry["min_decrypt_version"] = version

    # -- KekBackend ------------------------------------------------------------------------------
    def wrap(self, key_id: str, dek: bytes, *, context: bytes = b"") -> Wrapped:
        """Wrap a 32-byte data key with the newest version of ``key_id``.

        Raises:
            KeyringError: unknown key id, a data key that is not 32 bytes, or the version's wrap limit.
        """
        if not isinstance(dek, (bytes, bytearray)) or len(dek) != DEK_SIZE:
            raise KeyringError(f"a data key must be {DEK_SIZE} bytes")
        with self._update() as doc:
            entry = self._entry(key_id, doc)
            version = max(int(v) for v in entry["versions"])
            record = entry["versions"][str(version)]
            if record["wraps"] >= MAX_WRAPS:
                raise KeyringError(f"key {key_id!r} version {version} has wrapped {MAX_WRAPS} keys; rotate it")
            record["wraps"] += 1
            kek = _b64(record["key"], "key")
        nonce = os.urandom(12)
        return Wrapped(version, nonce + AESGCM(kek).encrypt(nonce, bytes(dek), _aad(key_id, version, context)))

    def unwrap(self, key_id: str, version: int, wrapped: bytes, *, context: bytes = b"") -> bytes:
        """Unwrap a data key wrapped by ``version`` of ``key_id``.

        Raises:
            KeyringError: unknown key id or version, or the version is archived.
            DecryptionError: the wrapped key, version or context do not match.
        """
        self._doc = self._read()  # archiving or rotation by another process takes effect at once
        entry = self._entry(key_id)
        if type(version) is not int or str(version) not in entry["versions"]:
            raise KeyringError(f"key {key_id!r} has no version {version!r}")
        if version < entry["min_decrypt_version"]:
            raise KeyringError(f"key {key_id!r} version {version} is archived "
                               f"(min_decrypt_version is {entry['min_decrypt_version']}); it can no longer unwrap")
        kek = _b64(entry["versions"][str(version)]["key"], "key")
        wrapped = bytes(wrapped)
        try:
            return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], _aad(key_id, version, context))
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError() from exc

    def rewrap(self, key_id: str, version: int, wrapped: bytes, *, context: bytes = b"") -> Wrapped:
        """Move a wrapped data key to the newest version (unchanged if already there).

        Raises:
            KeyringError: as :meth:`unwrap` and :meth:`wrap`.
            DecryptionError: the wrapped key does not unwrap.
        """
        dek = self.unwrap(key_id, version, wrapped, context=context)
        if version == self.primary_version(key_id):
            return Wrapped(version, bytes(wrapped))
        return self.wrap(key_id, dek, context=context)


def _new_version() -> dict[str, Any]:
    return {"key": base64.b64encode(os.urandom(32)).decode(), "created": _now(), "wraps": 0}


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise KeyringError(f"keyring: {where} is not base64") from exc


def _validate(doc: Any, where: str) -> None:
    def bad(field: str, why: str) -> KeyringError:
        return KeyringError(f"keyring {where!r}: {field}: {why}")

    if not isinstance(doc, dict) or set(doc) != {"format", "keys"}:
        raise bad("(top)", "must be an object with exactly 'format' and 'keys'")
    if doc["format"] != FORMAT:
        raise bad("format", f"must be {FORMAT!r}, got {doc['format']!r}")
    if not isinstance(doc["keys"], dict):
        raise bad("keys", "must be an object")
    for key_id, entry in doc["keys"].items():
        loc = f"keys.{key_id}"
        if not _KEY_ID.fullmatch(key_id):
            raise bad(loc, "invalid key id")
        if not isinstance(entry, dict) or set(entry) != {"min_decrypt_version", "versions"}:
            raise bad(loc, "must have exactly 'min_decrypt_version' and 'versions'")
        versions = entry["versions"]
        if not isinstance(versions, dict) or not versions:
            raise bad(f"{loc}.versions", "must be a non-empty object")
        for v, record in versions.items():
            if not v.isdigit() or v != str(int(v)) or int(v) < 1:
                raise bad(f"{loc}.versions.{v}", "version must be a positive integer")
            if not isinstance(record, dict) or set(record) != {"key", "created", "wraps"}:
                raise bad(f"{loc}.versions.{v}", "must have exactly 'key', 'created' and 'wraps'")
            if not isinstance(record["key"], str) or len(_b64(record["key"], f"{loc}.versions.{v}.key")) != 32:
                raise bad(f"{loc}.versions.{v}.key", "must be 32 bytes, base64")
            if type(record["wraps"]) is not int or record["wraps"] < 0:
                raise bad(f"{loc}.versions.{v}.wraps", "must be a non-negative integer")
        mdv = entry["min_decrypt_version"]
        if type(mdv) is not int or not 1 <= mdv <= max(int(v) for v in versions):
            raise bad(f"{loc}.min_decrypt_version", f"must be an int in [1, newest version], got {mdv!r}")
