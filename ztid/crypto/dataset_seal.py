"""Sealing datasets: seal a directory's files under one fresh data key, and rewrap them to a newer KEK.

* :func:`seal_dataset` asks the key service for one fresh data key (``NewKey``, needs ``write``)
  and seals every regular file of a directory into ``OUT/<relative path>.ztid``; the header
  names the dataset and the file's relative path, both authenticated.
* :func:`rewrap_dataset` rewraps every sealed file's data key to the service's newest KEK version.

Reading a sealed directory is :mod:`ztid.crypto.dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ztid.crypto._format import DEFAULT_SEGMENT_SIZE
from ztid.crypto.sealed import SealedHeader, rewrap_file, seal_file
from ztid.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.keyd.client import KeyClient

__all__ = ["SUFFIX", "SealReport", "rewrap_dataset", "seal_dataset"]

SUFFIX = ".ztid"


@dataclass(frozen=True, slots=True)
class SealReport:
    """What :func:`seal_dataset` wrote."""

    dataset: str
    files: tuple[str, ...]
    bytes_in: int
    key_id: str
    key_version: int
    decision_id: str


def seal_dataset(src: str | os.PathLike[str], out: str | os.PathLike[str], *, dataset: str, target: str,
                 key_client: "KeyClient", tenant: str | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 progress: Callable[[int, int, str], None] | None = None) -> SealReport:
    """Seal every regular file under ``src`` into ``out`` with one fresh data key for the dataset.

    Args:
        progress: called as ``progress(bytes_done, bytes_total, name)`` after each file.

    Raises:
        KeyReleaseError: the key service refused a new key (``write`` on ``target``).
        UsageError: ``src`` holds no file, or a file cannot be read or written.
        CryptoError: a file name cannot go into a header.
    """
    src_dir, out_dir = Path(src), Path(out)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise UsageError(f"no files to seal under {os.fspath(src_dir)!r}")
    if out_dir.resolve().is_relative_to(src_dir.resolve()):
        raise UsageError(f"output {os.fspath(out_dir)!r} must not be inside the source directory")
    total = sum(p.stat().st_size for p in files)
    fresh = key_client.new_key(dataset, target, tenant=tenant)
    w = fresh.wrapped
    done, names = 0, []
    try:
        for p in files:
            name = p.relative_to(src_dir).as_posix()
            dst = out_dir / (name + SUFFIX)
            dst.parent.mkdir(parents=True, exist_ok=True)
            seal_file(p, dst, data_key=fresh.lease.key(), wrapped_key=w.wrapped_key, dataset=dataset, name=name,
                      key_id=w.key_id, key_version=w.version, segment_size=segment_size)
            done += p.stat().st_size
            names.append(name)
            if progress is not None:
                progress(done, total, name)
    finally:
        fresh.lease.drop()
    return SealReport(dataset, tuple(names), done, w.key_id, w.version, w.decision_id)


def rewrap_dataset(root: str | os.PathLike[str], *, key_client: "KeyClient") -> list[SealedHeader]:
    """Rewrap every sealed file under ``root`` to the key service's newest KEK version (data untouched).

    Raises:
        KeyReleaseError: the service refused (``write`` on the dataset's target).
        UsageError: a file cannot be read or written; CryptoError: a malformed header.
    """
    backend = key_client.rewrap_backend()
    paths = sorted(p for p in Path(root).rglob(f"*{SUFFIX}") if p.is_file() and not p.is_symlink())
    return [rewrap_file(p, backend) for p in paths]
