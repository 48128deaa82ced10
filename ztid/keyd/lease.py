"""Leased data keys: a key the key service released, usable only until its lease ends.

A :class:`KeyLease` holds the 32-byte data key in a ``bytearray`` together with a deadline on the
monotonic clock (the service's lease duration, counted from when the answer arrived, and never past
the holder's own SVID expiry). :meth:`KeyLease.key` returns the key while the lease runs and raises
:class:`~ztid.errors.KeyReleaseError` afterwards; the bytes are overwritten the first time the
lease is found over (best effort: CPython may hold other copies, see docs/threat-model.md).

A lease survives ``fork()`` unchanged (it is plain memory), so a PyTorch DataLoader worker forked
by the parent keeps the parent's key until the same deadline, and no longer: a worker never renews
(renewal needs the parent's gRPC channel, which must not be used after fork). :attr:`owner_pid`
tells the process that fetched the key from the ones that inherited it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from dataclasses import dataclass

from ztid.errors import KeyReleaseError

__all__ = ["KeyLease", "LeaseInfo"]


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What a lease says, without the key (safe to log).

    Attributes:
        dataset: the dataset the key belongs to.
        key_id: the KEK id that wrapped it.
        version: the KEK version.
        seconds: the lease's length as granted.
        not_after: the lease's end (wall clock, UTC; the deadline itself is monotonic).
        decision_id: the decision log entry that released the key.
    """

    dataset: str
    key_id: str
    version: int
    seconds: float
    not_after: dt.datetime
    decision_id: str


class KeyLease:
    """A data key and the monotonic deadline after which it must not be used.

    Args:
        data_key: the key (copied into a private ``bytearray``).
        info: the lease's description.
        deadline: ``time.monotonic()`` value at which the lease ends.
    """

    __slots__ = ("_key", "_lock", "info", "deadline", "owner_pid", "_dropped")

    def __init__(self, data_key: bytes, info: LeaseInfo, *, deadline: float) -> None:
        self._key = bytearray(data_key)
        self._lock = threading.Lock()
        self.info = info
        self.deadline = deadline
        self.owner_pid = os.getpid()
        self._dropped = False

    @classmethod
    def granted(cls, data_key: bytes, info: LeaseInfo, *, received_at: float, svid_not_after: dt.datetime | None = None) -> "KeyLease":
        """A lease of ``info.seconds`` from ``received_at`` (monotonic), cut at ``svid_not_after``."""
        seconds = info.seconds
        if svid_not_after is not None:
            left = (svid_not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()
            seconds = min(seconds, left)
        return cls(data_key, info, deadline=received_at + max(seconds, 0.0))

    def remaining(self) -> float:
        """Seconds left (0 once over or dropped)."""
        if self._dropped:
            return 0.0
        return max(0.0, self.deadline - time.monotonic())

    @property
    def valid(self) -> bool:
        return self.remaining() > 0.0

    @property
    def inherited(self) -> bool:
        """True in a process that got this lease through ``fork()`` rather than from the service."""
        return os.getpid() != self.owner_pid

    def key(self) -> bytes:
        """The data key, while the lease runs.

        Raises:
            KeyReleaseError: the lease is over (or was dropped); the key is then wiped.
        """
        if self._dropped or time.monotonic() >= self.deadline:
            self.drop()
            raise KeyReleaseError(
                f"the lease on dataset {self.info.dataset!r} key {self.info.key_id!r} v{self.info.version} ended "
                f"at {self.info.not_after.isoformat(timespec='seconds')}; ask the key service again with a valid SVID"
            )
        return bytes(self._key)

    def drop(self) -> None:
        """Wipe the key now; :meth:`key` raises from then on."""
        with self._lock:
            if not self._dropped:
                self._key[:] = bytes(len(self._key))
                self._dropped = True

    def __repr__(self) -> str:  # never the key
        i = self.info
        return f"KeyLease(dataset={i.dataset!r}, key_id={i.key_id!r}, version={i.version}, remaining={self.remaining():.1f}s)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a KeyLease is not picklable: it reaches workers only by fork (see ztid.crypto.torch)")
