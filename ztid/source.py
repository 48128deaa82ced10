"""SVID sources: one small interface for "my current SVID and the trust bundles", with updates.

Every enforcement point takes a source and asks it for a :class:`SvidSnapshot` per handshake,
so rotation needs no restart. A snapshot is coherent: the SVID's key matches its certificate
and the bundles are the ones delivered with it. Bundles are replaced, never merged.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ztid.errors import SourceError

if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import BundleSet
    from ztid.svid import X509Svid

__all__ = ["StaticSource", "SvidSnapshot", "SvidSource"]

_generations = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SvidSnapshot:
    """One coherent view: this workload's SVID and the trust bundles to verify peers with.

    Attributes:
        svid: this workload's own X509-SVID (certificate chain, leaf first, and its key).
        bundles: the trust bundles, keyed by trust domain.
        generation: increases with every update a source delivers (useful for caches).
    """

    svid: "X509Svid"
    bundles: "BundleSet"
    generation: int


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


class StaticSource:
    """A source holding one SVID and bundle set, replaced only by :meth:`update` (tests, fork hand-off)."""

    def __init__(self, svid: "X509Svid", bundles: "BundleSet") -> None:
        self._lock = threading.Lock()
        self._snapshot: SvidSnapshot | None = SvidSnapshot(svid, bundles, next(_generations))
        self._subscribers: list[Callable[[SvidSnapshot], None]] = []

    def snapshot(self) -> SvidSnapshot:
        snap = self._snapshot
        if snap is None:
            raise SourceError("SVID source is closed")
        return snap

    def update(self, svid: "X509Svid", bundles: "BundleSet") -> SvidSnapshot:
        """Replace the SVID and bundles atomically and notify subscribers."""
        with self._lock:
            if self._snapshot is None:
                raise SourceError("SVID source is closed")
            snap = SvidSnapshot(svid, bundles, next(_generations))
            self._snapshot = snap
            subscribers = list(self._subscribers)
        for cb in subscribers:
            cb(snap)
        return snap

    def subscribe(self, callback: Callable[[SvidSnapshot], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            self._snapshot = None
            self._subscribers.clear()
