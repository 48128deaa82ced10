"""Atomic file replacement: readers see the old file or the new one, never a torn write."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "write_atomic"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on a clean exit fsync it and rename it over ``path``.

    The file gets ``mode`` before any byte is written (so a 0600 secret is never briefly readable);
    the directory is fsynced too, so the rename survives a crash. On any exception the temporary
    file is removed and ``path`` is unchanged.

    Raises:
        OSError: the write or rename failed; callers translate it.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_file`).

    Raises:
        OSError: the write or rename failed (``path`` is then unchanged); callers translate it.
    """
    with atomic_file(path, mode=mode) as f:
        f.write(data)
