"""Sealed datasets: read a sealed directory back, verified, only while the key service's lease on its key runs.

* :func:`seal_dataset` and :func:`rewrap_dataset` write a sealed directory, every file under one
  data key; they are defined in :mod:`ztid.crypto.dataset_seal` and re-exported here.
* :func:`open` returns a seekable, read-only file object over one sealed file. Its key comes
  from the key service (``UnwrapKey``, needs ``read``) under a lease; each read checks the lease.
  When it has ended, the process that fetched the key asks again (with its current SVID, so a
  revoked policy or an expired SVID stops it there); a process that inherited the key by
  ``fork()`` never asks, and raises :class:`~ztid.errors.KeyReleaseError`.
* :class:`SealedDataset` lists a sealed directory and opens its files with one shared lease.

A read of several whole segments is decrypted by ``decrypt_threads`` threads straight into the
caller's buffer (see :mod:`ztid.crypto.random_access`); it returns only verified plaintext.

Torch is not imported here (see :mod:`ztid.crypto.torch`); gRPC only when a key client is made.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ztid.crypto._format import as_view
from ztid.crypto._parallel import check_threads, filled_bytes
from ztid.crypto.dataset_seal import SUFFIX, SealReport, rewrap_dataset, seal_dataset
from ztid.crypto.random_access import RandomAccessDecryptor
from ztid.crypto.sealed import SealedHeader, read_header
from ztid.errors import CryptoError, KeyReleaseError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.keyd.client import KeyClient
    from ztid.keyd.lease import KeyLease
    from ztid.source import SvidSource

__all__ = ["KeyCache", "SealReport", "SealedDataset", "SealedFile", "open", "rewrap_dataset", "seal_dataset"]

_builtin_open = open


def _client(key_client: "KeyClient | None", keyd: str | None, source: "SvidSource | None", server_name: str | None) -> "KeyClient":
    if key_client is not None:
        return key_client
    if keyd is None or source is None:
        raise UsageError("reading a sealed dataset needs key_client=, or keyd= (the key service address) and source=")
    from ztid.keyd.client import KeyClient

    return KeyClient(keyd, source=source, server_name=server_name)


class KeyCache:
    """Leases on data keys, one per (dataset, key id, version, wrapped key), shared by many files.

    ``lease_for(header)`` returns a valid lease: the cached one, or (in the process that owns the
    client) a fresh one from the key service. In a ``fork()``-ed child an ended lease is final.

    Args:
        key_client: the key service client (``None``: only leases handed in by :meth:`put` are used).
        renew_margin: ask again when fewer than this many seconds remain (owner process only).
    """

    def __init__(self, key_client: "KeyClient | None", *, renew_margin: float = 0.0) -> None:
        self._client = key_client
        self._margin = renew_margin
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str, int, bytes], "KeyLease"] = {}
        self._pid = os.getpid()

    @staticmethod
    def _slot(h: SealedHeader) -> tuple[str, str, int, bytes]:
        return (h.dataset, h.key_id, h.key_version, h.wrapped_key)

    def lease_for(self, header: SealedHeader, *, renew: bool = True) -> "KeyLease":
        """A lease on ``header``'s data key that has not ended.

        Raises:
            KeyReleaseError: the service refused, cannot be reached, or this process may not renew.
        """
        slot = self._slot(header)
        lease = self._leases.get(slot)
        if lease is not None and lease.remaining() > self._margin:
            return lease
        if not renew or os.getpid() != self._pid or self._client is None:
            if lease is not None and lease.valid:
                return lease
            where = "a forked worker" if os.getpid() != self._pid else "this reader"
            raise KeyReleaseError(f"no valid lease on the key of dataset {header.dataset!r} in {where}: "
                                  + ("the lease inherited from the parent ended; the parent must fetch a new one"
                                     if os.getpid() != self._pid else "it ended and renewal is off"))
        with self._lock:
            lease = self._leases.get(slot)
            if lease is None or lease.remaining() <= self._margin:
                fresh = self._client.unwrap_key(header.dataset, header.key_id, header.key_version, header.wrapped_key)
                if lease is not None:
                    lease.drop()
                self._leases[slot] = lease = fresh
        return lease

    def renew(self) -> None:
        """Drop every lease; the next read asks the service again (owner process only)."""
        with self._lock:
            for lease in self._leases.values():
                lease.drop()
            self._leases.clear()

    def drop(self) -> None:
        self.renew()


class SealedFile(io.RawIOBase):
    """A read-only, seekable view of one sealed file's plaintext, valid while its key lease runs.

    Every ``readinto`` first checks the lease; at its end it renews through the :class:`KeyCache`
    (owner process) or closes and raises :class:`~ztid.errors.KeyReleaseError`.
    """

    def __init__(self, path: str | os.PathLike[str], keys: KeyCache, *, dataset: str | None = None, name: str | None = None,
                 decrypt_threads: int | None = None) -> None:
        super().__init__()
        threads = check_threads(decrypt_threads)
        self.path = os.fspath(path)
        self._map = None
        try:
            self._f = _builtin_open(path, "rb")
        except OSError as exc:
            raise UsageError(f"cannot open sealed file {self.path!r}: {exc.strerror or exc}") from exc
        try:
            self.header = header = read_header(self._f)
            for what, want, got in (("dataset", dataset, header.dataset), ("name", name, header.name)):
                if want is not None and want != got:
                    raise CryptoError(f"sealed file {self.path!r} is {what} {got!r}, expected {want!r}")
            self._keys = keys
            self._lease = keys.lease_for(header)
            # Decrypt straight from the page cache: no copy of the ciphertext into a scratch buffer.
            # (Files are replaced, never rewritten in place, by seal and rewrap, so the map stays valid;
            # someone truncating the file under a reader makes it fault: see docs/threat-model.md.)
            self._map: mmap.mmap | None = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
            self._dec = RandomAccessDecryptor(self._lease.key(), memoryview(self._map), header.associated_data(),
                                              segment_size=header.segment_size, start=header.length,
                                              threads=threads)
        except BaseException:
            self._release()
            raise
        self.size = self._dec.size
        self._pos = 0

    @property
    def lease(self) -> "KeyLease":
        """The lease this file currently reads under."""
        return self._lease

    def _check_lease(self) -> None:
        if self._lease.valid:
            return
        try:
            lease = self._keys.lease_for(self.header)
        except KeyReleaseError:
            self.close()
            raise
        lease.key()  # raises if it ended meanwhile
        self._lease = lease

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None or base + offset < 0:
            raise ValueError(f"invalid seek: offset {offset}, whence {whence}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self._check_lease()
        n = self._dec.readinto_at(buffer, self._pos)
        self._pos += n
        return n

    def readall(self) -> bytes:
        return filled_bytes(max(0, self.size - self._pos), lambda view: self.readinto(view) if len(view) else 0)

    def _release(self) -> None:
        dec = self.__dict__.pop("_dec", None)
        if dec is not None:
            dec.close()
            del dec  # its views of the map go with it, so the map can close
        m = self.__dict__.pop("_map", None)
        if m is not None:
            try:
                m.close()
            except BufferError:  # a view is still alive somewhere; the map closes when it is collected
                pass
        self._f.close()

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()


def open(path: str | os.PathLike[str], *, key_client: "KeyClient | None" = None, keyd: str | None = None,  # noqa: A001
         source: "SvidSource | None" = None, server_name: str | None = None, keys: KeyCache | None = None,
         dataset: str | None = None, name: str | None = None, decrypt_threads: int | None = None) -> SealedFile:
    """Open a sealed file for verified, seekable reading with a key from the key service.

    Args:
        key_client: a :class:`~ztid.keyd.client.KeyClient`; or ``keyd`` (address) and ``source``.
        keys: a shared :class:`KeyCache` (many files, one lease); overrides the client options.
        dataset, name: refuse unless the authenticated header names this dataset / file.
        decrypt_threads: threads decrypting one large read (``None``: the CPUs available, at most 4).

    Raises:
        KeyReleaseError: the key service refused (the message quotes the policy's reason).
        CryptoError: malformed header or another dataset/file; DecryptionError: tampered.
        UsageError: the file cannot be opened, no way to reach the key service was given, or bad decrypt_threads.
    """
    cache = keys if keys is not None else KeyCache(_client(key_client, keyd, source, server_name))
    return SealedFile(path, cache, dataset=dataset, name=name, decrypt_threads=decrypt_threads)


@dataclass(frozen=True, slots=True)
class SealedEntry:
    """One file of a :class:`SealedDataset`: its name in the dataset and its path on disk."""

    name: str
    path: Path
    _ds: "SealedDataset"

    def open(self) -> SealedFile:
        return self._ds.open(self.name)

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.readall()


class SealedDataset:
    """A directory written by :func:`seal_dataset`: its files, opened with one shared key lease.

    Args:
        root: the sealed directory (``*.ztid`` files, any depth).
        dataset: the dataset id every file must carry (default: the first file's).
        key_client / keyd+source / keys: how to get the key (as :func:`open`).
        decrypt_threads: threads decrypting one large read of a file (as :func:`open`).

    Raises:
        UsageError: the directory holds no sealed file, or bad decrypt_threads.
    """

    def __init__(self, root: str | os.PathLike[str], *, dataset: str | None = None, key_client: "KeyClient | None" = None,
                 keyd: str | None = None, source: "SvidSource | None" = None, server_name: str | None = None,
                 keys: KeyCache | None = None, decrypt_threads: int | None = None) -> None:
        self.root = Path(root)
        self.decrypt_threads = check_threads(decrypt_threads)
        paths = sorted(p for p in self.root.rglob(f"*{SUFFIX}") if p.is_file() and not p.is_symlink())
        if not paths:
            raise UsageError(f"no sealed files (*{SUFFIX}) under {os.fspath(self.root)!r}")
        self._paths = {p.relative_to(self.root).as_posix()[: -len(SUFFIX)]: p for p in paths}
        self.names = tuple(self._paths)
        if dataset is None:
            with _builtin_open(paths[0], "rb") as f:
                dataset = read_header(f).dataset
        self.dataset = dataset
        self.keys = keys if keys is not None else KeyCache(_client(key_client, keyd, source, server_name))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[SealedEntry]:
        for name in self.names:
            yield SealedEntry(name, self._paths[name], self)

    def open(self, name: str, *, decrypt_threads: int | None = None) -> SealedFile:
        """Open file ``name``; its header must name this dataset and this file.

        Args:
            decrypt_threads: for this file (default: the dataset's ``decrypt_threads``).

        Raises:
            UsageError: no such file, or bad decrypt_threads; KeyReleaseError, CryptoError: as :func:`open`.
        """
        path = self._paths.get(name)
        if path is None:
            raise UsageError(f"dataset {self.dataset!r} has no file {name!r}")
        threads = self.decrypt_threads if decrypt_threads is None else decrypt_threads
        return SealedFile(path, self.keys, dataset=self.dataset, name=name, decrypt_threads=threads)

    def read_into(self, name: str, buffer: Any, *, decrypt_threads: int | None = None) -> int:
        """Decrypt all of file ``name`` into the start of ``buffer`` (e.g. one reused per worker); return its size.

        No fresh result is allocated (and page-faulted) per file, which is what makes a whole-file
        read through :meth:`SealedEntry.read_bytes` slower than a plaintext ``read_bytes()``. The
        lease is checked and every segment verified as by :meth:`SealedFile.readinto`: a failure
        while decrypting zeroes the file's range of ``buffer`` before the error is raised; one while
        opening (bad header or last segment, refused lease, short buffer) leaves ``buffer`` untouched.

        Raises:
            UsageError: no such file, a buffer that is not writable bytes-like or is shorter than the
                file (nothing written), or bad decrypt_threads; KeyReleaseError, CryptoError,
                DecryptionError: as :func:`open`.
        """
        out = as_view(buffer, "buffer")
        if out.readonly:
            raise UsageError("buffer must be writable")
        with self.open(name, decrypt_threads=decrypt_threads) as f:
            if len(out) < f.size:
                raise UsageError(f"file {name!r} is {f.size} bytes, the buffer only {len(out)}")
            return f.readinto(out[: f.size]) if f.size else 0

    def acquire(self) -> "KeyLease":
        """Fetch (or reuse) the key lease now, e.g. in a DataLoader's parent before it forks workers.

        Raises:
            KeyReleaseError: refused or unreachable.
        """
        with _builtin_open(self._paths[self.names[0]], "rb") as f:
            header = read_header(f)
        return self.keys.lease_for(header)

    def renew(self) -> "KeyLease":
        """Drop the lease and fetch a new one (with the current SVID; a revoked policy stops here).

        Raises:
            KeyReleaseError: refused or unreachable.
        """
        self.keys.renew()
        return self.acquire()

