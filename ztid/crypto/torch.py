"""PyTorch adapter (``ztid[torch]``): sealed datasets as torch Datasets for DataLoader workers started by fork.

The key is fetched **once, in the parent** (when the dataset is built, and again by
:class:`SealedDataLoader` before each epoch's workers start when the lease runs short). Workers
forked by the DataLoader inherit that lease in memory: they never open a Workload API stream or
a gRPC channel, never renew, and raise :class:`~ztid.errors.KeyReleaseError` (re-raised by the
DataLoader in the parent) once the lease ends. A revoked policy or an expired SVID therefore
stops every worker within one lease. Only the ``fork`` start method works: a lease is not
picklable, so ``spawn``/``forkserver`` workers are refused rather than handed a key by pickle.

::

    sealed = SealedDataset("shards/", key_client=client)
    loader = SealedDataLoader(SealedMapDataset(sealed, transform=decode), batch_size=32, num_workers=4)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch.utils.data as tud

from ztid.crypto.dataset import SealedDataset, SealedFile
from ztid.crypto._parallel import default_threads
from ztid.errors import UsageError

__all__ = ["SealedDataLoader", "SealedIterableDataset", "SealedMapDataset"]


class _Holder:
    def __init__(self, sealed: SealedDataset, renew_below: float) -> None:
        if not isinstance(sealed, SealedDataset):
            raise UsageError(f"expected a ztid.crypto.dataset.SealedDataset, got {type(sealed).__name__}")
        self.sealed = sealed
        self.renew_below = renew_below
        self.lease = sealed.acquire()  # in the parent, before any worker exists

    def refresh(self) -> None:
        """In the parent: get a fresh lease if less than ``renew_below`` seconds remain."""
        if self.lease.inherited:
            return
        if self.lease.remaining() < self.renew_below:
            self.lease = self.sealed.renew()


def _open(sealed: SealedDataset, name: str) -> SealedFile:
    """Open in a DataLoader worker with its share of the CPUs as decrypt threads (workers already
    run in parallel; more threads than CPUs only contend), else with the dataset's setting."""
    info = tud.get_worker_info()
    if info is None:
        return sealed.open(name)
    return sealed.open(name, decrypt_threads=max(1, min(sealed.decrypt_threads, default_threads() // info.num_workers)))


class _Buffers(threading.local):
    """One growing plaintext buffer per process and thread: a forked worker makes its own (never
    writes into pages it shares with the parent), and is never handed another thread's buffer."""

    pid = -1
    buf = bytearray()

    def get(self, size: int) -> bytearray:
        if self.pid != os.getpid() or len(self.buf) < size:
            # Never resized in place: a view a transform wrongly kept stays valid memory (the old
            # buffer lives while it does), it only stops being overwritten.
            self.pid, self.buf = os.getpid(), bytearray(size)
        return self.buf


class SealedMapDataset(tud.Dataset):
    """One item per sealed file: ``transform(name, data)`` or the file's bytes.

    Args:
        sealed: the sealed dataset (its key is fetched now, in this process).
        transform: maps ``(name, plaintext)`` to a sample; ``plaintext`` is ``bytes``, or with
            ``reuse_buffer`` a ``memoryview``.
        reuse_buffer: decrypt every item into one buffer per worker process (grown to the largest
            file) instead of a fresh ``bytes`` per item, which saves allocating and page-faulting
            each file's size anew. The view handed to ``transform`` is valid only until it returns:
            the next item overwrites it, and the DataLoader collates items after ``__getitem__``,
            so the transform must decode or copy what it keeps (an image decoder, ``bytes(view[a:b])``,
            ``torch.frombuffer(view, dtype=torch.uint8).clone()``; never a bare ``torch.frombuffer``
            or ``numpy.frombuffer`` of it). Copying a whole item allocates afresh and gives the gain
            back; the gain is for transforms that decode or keep a part. Needs a transform; off by default.
        renew_below: :class:`SealedDataLoader` renews the lease before an epoch when fewer seconds remain.

    Raises:
        KeyReleaseError: the key service refused the key.
        UsageError: ``reuse_buffer`` without a transform.
    """

    def __init__(self, sealed: SealedDataset, *, transform: Callable[[str, Any], Any] | None = None,
                 reuse_buffer: bool = False, renew_below: float = 60.0) -> None:
        if reuse_buffer and transform is None:
            raise UsageError("reuse_buffer=True needs a transform that copies or decodes what it keeps: "
                             "an item viewing the reused buffer would change under the DataLoader's collate")
        self._h = _Holder(sealed, renew_below)
        self._transform = transform
        self._buffers = _Buffers() if reuse_buffer else None

    @property
    def lease(self) -> Any:
        return self._h.lease

    def refresh(self) -> None:
        self._h.refresh()

    def __len__(self) -> int:
        return len(self._h.sealed)

    def __getitem__(self, index: int) -> Any:
        name = self._h.sealed.names[index]
        with _open(self._h.sealed, name) as f:
            if self._buffers is None:
                data = f.readall()
            else:  # the lease check, verification and zeroing on failure are readinto's, as for readall
                view = memoryview(self._buffers.get(f.size))[: f.size]
                if f.size:
                    f.readinto(view)  # fills all of it or raises
                data = view
        return data if self._transform is None else self._transform(name, data)


class SealedIterableDataset(tud.IterableDataset):
    """Streams samples from the sealed files, each worker taking every N-th file.

    Args:
        sealed: the sealed dataset (its key is fetched now, in this process).
        samples: maps ``(name, open SealedFile)`` to an iterable of samples (e.g. records of a
            shard); default yields ``(name, bytes)`` per file.
        renew_below: as :class:`SealedMapDataset`.

    Raises:
        KeyReleaseError: the key service refused the key.
    """

    def __init__(self, sealed: SealedDataset, *, samples: Callable[[str, SealedFile], Iterable[Any]] | None = None,
                 renew_below: float = 60.0) -> None:
        self._h = _Holder(sealed, renew_below)
        self._samples = samples

    @property
    def lease(self) -> Any:
        return self._h.lease

    def refresh(self) -> None:
        self._h.refresh()

    def __iter__(self) -> Iterator[Any]:
        info = tud.get_worker_info()
        names = self._h.sealed.names
        if info is not None:
            names = names[info.id :: info.num_workers]
        for name in names:
            with _open(self._h.sealed, name) as f:
                if self._samples is None:
                    yield (name, f.readall())
                else:
                    yield from self._samples(name, f)


class SealedDataLoader(tud.DataLoader):
    """A DataLoader that renews a sealed dataset's lease in the parent before each epoch's workers fork.

    Takes DataLoader's arguments; ``multiprocessing_context`` defaults to ``"fork"`` when
    ``num_workers > 0`` (the only start method a lease reaches). With ``persistent_workers=True``
    the workers keep the first lease and stop at its end.

    Raises:
        UsageError: a start method other than fork.
    """

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("num_workers", 0) > 0:
            ctx = kwargs.setdefault("multiprocessing_context", "fork")
            method = ctx if isinstance(ctx, str) else getattr(ctx, "get_start_method", lambda: "?")()
            if method != "fork":
                raise UsageError(f"sealed datasets reach DataLoader workers only by fork, not {method!r}")
        super().__init__(dataset, *args, **kwargs)

    def __iter__(self) -> Any:
        refresh = getattr(self.dataset, "refresh", None)
        if refresh is not None:
            refresh()
        return super().__iter__()
