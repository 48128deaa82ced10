"""SVID sources: one small interface for "my current SVID and the trust bundles", with updates.

Every enforcement point takes a source and asks it for a :class:`SvidSnapshot` per handshake,
so rotation needs no restart. A snapshot is coherent: the SVID's key matches its certificate
and the bundles are the ones delivered with it. Bundles are replaced, never merged.

Sources: :class:`StaticSource` (here), :class:`~ztid.source_files.FileSource` (PEM files,
reloaded on change) and :class:`~ztid.source_workload.WorkloadApiSource` (SPIFFE Workload API).

Fork hand-off: gRPC Python is not fork-safe and threads do not survive ``fork()``. In a child
started by ``fork`` (a PyTorch DataLoader worker, ``multiprocessing`` with the fork start method)
every live :class:`WorkloadApiSource` turns into a hand-off of the parent's last snapshot: it
keeps serving that SVID until the SVID expires, then raises :class:`~ztid.errors.SourceError`,
and never touches the parent's gRPC channel. ``FileSource`` simply keeps reloading in the child.
For ``spawn``/``forkserver`` children, pass ``source.fork_handoff()`` (a picklable
:class:`StaticSource` with the same bounded life) to the child explicitly.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ztid.errors import SourceError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import BundleSet
    from ztid.svid import X509Svid

__all__ = ["FileSource", "StaticSource", "SvidSnapshot", "SvidSource", "WorkloadApiSource"]

log = logging.getLogger("ztid.source")

_generations = itertools.count(1)


def _next_generation() -> int:
    return next(_generations)


@dataclass(frozen=True, slots=True)
class SvidSnapshot:
    """One coherent view: this workload's SVID and the trust bundles to verify peers with.

    Picklable (as PEM and SPIFFE bundle JSON) so it can be handed to a spawned worker; the
    pickle holds the private key, so send it only over a channel you trust (a local pipe).

    Attributes:
        svid: this workload's own X509-SVID (certificate chain, leaf first, and its key).
        bundles: the trust bundles, keyed by trust domain.
        generation: increases with every update a source delivers (useful for caches).
    """

    svid: "X509Svid"
    bundles: "BundleSet"
    generation: int

    def __reduce__(self) -> tuple[Any, ...]:
        docs = tuple((td.name, b.to_jwks()) for td, b in self.bundles.items())
        return (_unpickle_snapshot, (self.svid.chain_pem(), self.svid.key_pem(), docs, self.generation))


def _unpickle_snapshot(chain_pem: bytes, key_pem: bytes, docs: tuple[tuple[str, bytes], ...], generation: int) -> SvidSnapshot:
    from ztid.bundle import Bundle, BundleSet
    from ztid.svid import X509Svid

    bundles = BundleSet(Bundle.from_jwks(doc, trust_domain=name) for name, doc in docs)
    return SvidSnapshot(X509Svid.parse(chain_pem, key_pem), bundles, generation)


@runtime_checkable
class SvidSource(Protocol):
    """What enforcement points need from an identity provider."""

    def snapshot(self) -> SvidSnapshot:
        """Return the current snapshot.

        Raises:
            SourceError: the source cannot serve (closed, never received an SVID, or stopped
                serving after the Workload API refused it: fail closed).
        """
        ...

    def subscribe(self, callback: Callable[[SvidSnapshot], None]) -> Callable[[], None]:
        """Call ``callback`` with each new snapshot; return a function that unsubscribes."""
        ...

    def close(self) -> None:
        """Stop updates and release resources; later snapshot() calls raise SourceError."""
        ...


class _Publisher:
    """Subscriber bookkeeping shared by the sources. Callbacks run outside any lock; one that
    raises is logged and does not stop the others."""

    def __init__(self) -> None:
        self._sub_lock = threading.Lock()
        self._subscribers: list[tuple[Callable[[SvidSnapshot], None], Callable[[SourceError], None] | None]] = []

    def subscribe(
        self,
        callback: Callable[[SvidSnapshot], None],
        *,
        on_error: Callable[[SourceError], None] | None = None,
    ) -> Callable[[], None]:
        """Call ``callback(snapshot)`` on every update; returns a function that unsubscribes.

        Args:
            callback: called with each new snapshot.
            on_error: called with the error when the source stops serving (fail closed), so a
                server can drop what it cached; :meth:`snapshot` raises from then on.
        """
        entry = (callback, on_error)
        with self._sub_lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._sub_lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def _publish(self, snap: SvidSnapshot) -> None:
        with self._sub_lock:
            subscribers = [cb for cb, _ in self._subscribers]
        for cb in subscribers:
            try:
                cb(snap)
            except Exception:  # a subscriber's bug must not stop rotation for the others
                log.exception("SVID source subscriber %r failed", cb)

    def _publish_error(self, error: SourceError) -> None:
        with self._sub_lock:
            handlers = [h for _, h in self._subscribers if h is not None]
        for h in handlers:
            try:
                h(error)
            except Exception:
                log.exception("SVID source error subscriber %r failed", h)

    def _clear_subscribers(self) -> None:
        with self._sub_lock:
            self._subscribers.clear()


class StaticSource(_Publisher):
    """A source holding one SVID and bundle set, replaced only by :meth:`update` (tests, fork hand-off).

    Args:
        svid: the SVID to serve.
        bundles: the bundles to serve.
        expires: stop serving (raise SourceError) once the SVID's notAfter has passed. Off by
            default so tests can serve deliberately expired SVIDs; on for fork hand-offs.
    """

    def __init__(self, svid: "X509Svid", bundles: "BundleSet", *, expires: bool = False) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._expires = expires
        self._snapshot: SvidSnapshot | None = SvidSnapshot(svid, bundles, _next_generation())

    @classmethod
    def from_snapshot(cls, snapshot: SvidSnapshot, *, expires: bool = False) -> "StaticSource":
        """A static source serving ``snapshot`` (same generation)."""
        src = cls.__new__(cls)
        _Publisher.__init__(src)
        src._lock = threading.Lock()
        src._expires = expires
        src._snapshot = snapshot
        return src

    def snapshot(self) -> SvidSnapshot:
        snap = self._snapshot
        if snap is None:
            raise SourceError("SVID source is closed")
        if self._expires and dt.datetime.now(dt.timezone.utc) >= snap.svid.not_after:
            raise SourceError(
                f"handed-off SVID {str(snap.svid.spiffe_id)!r} expired at {snap.svid.not_after.isoformat()}; "
                "this process needs its own source (create one after fork, or hand off a fresh snapshot)"
            )
        return snap

    def update(self, svid: "X509Svid", bundles: "BundleSet") -> SvidSnapshot:
        """Replace the SVID and bundles atomically and notify subscribers."""
        with self._lock:
            if self._snapshot is None:
                raise SourceError("SVID source is closed")
            snap = SvidSnapshot(svid, bundles, _next_generation())
            self._snapshot = snap
        self._publish(snap)
        return snap

    def fork_handoff(self) -> "StaticSource":
        """A picklable copy serving the current snapshot until its SVID expires.

        Raises:
            SourceError: this source cannot serve.
        """
        return StaticSource.from_snapshot(self.snapshot(), expires=True)

    def close(self) -> None:
        with self._lock:
            self._snapshot = None
        self._clear_subscribers()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle_static, (self.snapshot(), self._expires))


def _unpickle_static(snapshot: SvidSnapshot, expires: bool) -> StaticSource:
    return StaticSource.from_snapshot(snapshot, expires=expires)


# -- fork hand-off ---------------------------------------------------------------------------------

_FORK_AWARE: "weakref.WeakSet[Any]" = weakref.WeakSet()
# Objects a forked child must never finalize (a gRPC channel inherited from the parent).
_KEEP_ALIVE_IN_CHILD: list[Any] = []


def _register_fork_aware(source: Any) -> None:
    """Call ``source._after_fork_in_child()`` in every child started by ``os.fork``."""
    _FORK_AWARE.add(source)


def _after_fork_in_child() -> None:
    for source in list(_FORK_AWARE):
        try:
            source._after_fork_in_child()
        except Exception:  # never break the child's start-up; the source then fails closed
            log.exception("fork hand-off failed for %r", source)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def __getattr__(name: str) -> Any:
    # The other sources live in their own modules, imported only when asked for (the Workload API
    # source pulls in gRPC and the spiffe package).
    if name == "FileSource":
        from ztid.source_files import FileSource

        return FileSource
    if name == "WorkloadApiSource":
        from ztid.source_workload import WorkloadApiSource

        return WorkloadApiSource
    raise AttributeError(f"module 'ztid.source' has no attribute {name!r}")
