"""FileSource: an SVID and bundles read from PEM/JSON files, reloaded when the files change.

Works with anything that writes files: ``spiffe-helper``, cert-manager's CSI driver, ``ztid ca
issue``, a Kubernetes secret volume. A new snapshot is published only when the certificate
chain, the key and every bundle file parse and the key matches the leaf. Files caught mid-write
(a certificate already replaced, its key not yet; a half-written PEM; a file changing while it
is read) are retried at the next poll while the last good snapshot keeps being served, so a
mismatched pair is never served.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ztid.bundle import BundleSet
from ztid.errors import BundleError, SourceError, SvidError, UsageError
from ztid.source import SvidSnapshot, StaticSource, _next_generation, _Publisher, _register_fork_aware
from ztid.svid import X509Svid

if TYPE_CHECKING:  # pragma: no cover
    from ztid.spiffeid import TrustDomain

__all__ = ["FileSource"]

log = logging.getLogger("ztid.source")

PathLike = str | os.PathLike[str]


def _stamp(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


class FileSource(_Publisher):
    """Serve the SVID in ``cert_path``/``key_path`` and the bundles in ``bundle_paths``, reloading on change.

    Args:
        cert_path: PEM certificate chain, leaf first.
        key_path: PEM private key of the leaf (unencrypted).
        bundle_paths: one or more bundle files (PEM or SPIFFE bundle JSON), one trust domain each.
        trust_domain: the trust domain of the bundle file(s) when they do not name it (JSON).
        poll_interval: seconds between checks of the files' inode, size and mtime.

    Raises:
        SourceError: the files cannot be read or do not form a valid SVID and bundle set at start.
        UsageError: no bundle path, or a non-positive poll interval.
    """

    def __init__(
        self,
        cert_path: PathLike,
        key_path: PathLike,
        bundle_paths: PathLike | Sequence[PathLike],
        *,
        trust_domain: "TrustDomain | str | None" = None,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(bundle_paths, (str, os.PathLike)):
            bundle_paths = [bundle_paths]
        if not bundle_paths:
            raise UsageError("FileSource needs at least one bundle file")
        if not poll_interval > 0:
            raise UsageError(f"poll_interval must be positive, got {poll_interval!r}")
        try:
            self._cert, self._key = os.fspath(cert_path), os.fspath(key_path)
            self._bundle_paths = [os.fspath(p) for p in bundle_paths]
        except TypeError as exc:
            raise UsageError(f"FileSource paths must be str or os.PathLike: {exc}") from exc
        self._trust_domain = trust_domain
        self._interval = float(poll_interval)
        self._lock = threading.Lock()
        self._snapshot: SvidSnapshot | None = None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._closed = False
        self._last_error: Exception | None = None
        self._stop = threading.Event()
        if not self.reload():
            raise SourceError(f"cannot load an SVID from {self._cert!r} and {self._key!r}: {self._last_error}") from self._last_error
        self._thread = self._start_poller()
        _register_fork_aware(self)

    @property
    def paths(self) -> list[str]:
        return [self._cert, self._key, *self._bundle_paths]

    @property
    def last_error(self) -> Exception | None:
        """Why the latest reload attempt kept the previous snapshot (None after a good load)."""
        return self._last_error

    def snapshot(self) -> SvidSnapshot:
        snap = self._snapshot
        if self._closed or snap is None:
            raise SourceError("SVID source is closed")
        return snap

    def reload(self) -> bool:
        """Check the files now; publish and return True when they changed and form a valid snapshot."""
        with self._lock:
            if self._closed:
                return False
            before = _stamp(self.paths)
            if before is None or before == self._stamp:
                if before is None:
                    self._last_error = SourceError(f"a file is missing: {', '.join(self.paths)}")
                return False
            try:
                svid = X509Svid.load(self._cert, self._key)
                bundles = BundleSet.load(*self._bundle_paths, trust_domain=self._trust_domain)
            except (SvidError, BundleError) as exc:  # most likely caught mid-write: retry next poll
                self._last_error = exc
                log.warning("FileSource: keeping the previous SVID, files not usable yet: %s", exc)
                return False
            if _stamp(self.paths) != before:  # changed while we read: read again next time
                self._last_error = SourceError("files changed while being read")
                return False
            snap = SvidSnapshot(svid, bundles, _next_generation())
            self._snapshot, self._stamp, self._last_error = snap, before, None
        self._publish(snap)
        return True

    def _start_poller(self) -> threading.Thread:
        def run() -> None:
            while not self._stop.wait(self._interval):
                try:
                    self.reload()
                except Exception:  # keep polling whatever happens; the last good snapshot stays
                    log.exception("FileSource poll failed")

        t = threading.Thread(target=run, name="ztid-filesource", daemon=True)
        t.start()
        return t

    def fork_handoff(self) -> StaticSource:
        """A picklable static copy of the current snapshot, serving until the SVID expires.

        Raises:
            SourceError: the source is closed.
        """
        return StaticSource.from_snapshot(self.snapshot(), expires=True)

    def _after_fork_in_child(self) -> None:
        # Locks may have been held by a parent thread at fork time; the poller did not survive.
        self._lock = threading.Lock()
        self._sub_lock = threading.Lock()
        self._stop = threading.Event()
        if not self._closed:
            self._thread = self._start_poller()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            self._snapshot = None
        self._clear_subscribers()

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileSource({self._cert!r}, {self._key!r}, {self._bundle_paths!r})"
