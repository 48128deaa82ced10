"""The channel's segment AEAD: AES-256-GCM over a message's segments, on a small thread pool when large.

Nonce of segment k = epoch(4) | counter+k (8); associated data = channel_id | header | k(4) | last(1)
(see :mod:`ztid.crypto.channel_frame`). ``cryptography``'s AESGCM releases the GIL, so two threads
reach about twice one core's rate at >= 64 KiB per call; below ``PARALLEL_MIN`` the hand-off costs more
than it saves, so callers pass ``parallel=False`` for such messages.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cryptography.exceptions import InvalidTag

from ztid.crypto.channel_frame import TAG, Header, n_segments
from ztid.errors import DecryptionError

__all__ = ["PARALLEL_MIN", "WINDOW", "decrypt_segments", "encrypt_segments", "ring_size"]

NONCE = struct.Struct(">IQ")
SEG = struct.Struct(">IB")
PARALLEL_MIN = 256 << 10
WINDOW = 4  # segments encrypted ahead of the one being sent (measured: unbounded is slower, cache)

_pool_lock = threading.Lock()
_pool_state: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """A process-wide pool (one per PID, so a forked child builds its own)."""
    global _pool_state
    with _pool_lock:
        if _pool_state is None or _pool_state[0] != os.getpid():
            workers = max(2, min(4, os.cpu_count() or 2))
            _pool_state = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="ztid-channel"))
        return _pool_state[1]


def ring_size(parallel: bool) -> int:
    """Segment slots a stream needs: the window in flight plus the one being sent or received."""
    return WINDOW + 1 if parallel else 1


def encrypt_segments(
    aead: Any, channel_id: bytes, header: Header, src: memoryview, dst_for: Callable[[int, int], memoryview], *, parallel: bool
) -> Iterator[memoryview]:
    """Encrypt every segment of ``src``; yield each, in order, once ready.

    ``dst_for(k, n)`` gives the view segment k's ``n`` bytes of ciphertext and tag go to. With
    ``parallel`` at most ``WINDOW`` segments are encrypted ahead of the one yielded, so a ring of
    ``WINDOW + 1`` slots is enough: a slot is reused only after the consumer took the segment before it.
    """
    seg, length = header.segment_size, header.length
    nseg = n_segments(length, seg)
    prefix = channel_id + header.raw

    def one(k: int) -> memoryview:
        lo, hi = k * seg, min(length, (k + 1) * seg)
        dst = dst_for(k, hi - lo + TAG)
        aead.encrypt_into(NONCE.pack(header.epoch, header.counter + k), src[lo:hi], prefix + SEG.pack(k, k == nseg - 1), dst)
        return dst

    if not parallel or nseg == 1:
        for k in range(nseg):
            yield one(k)
        return
    pool = _pool()
    futures: list[Future[memoryview]] = [pool.submit(one, k) for k in range(min(WINDOW, nseg))]
    try:
        for k in range(nseg):
            if k + WINDOW < nseg:
                futures.append(pool.submit(one, k + WINDOW))
            yield futures[k].result()
    finally:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()  # wait: no worker may still write into a slot once we return


def decrypt_segments(
    aead: Any,
    channel_id: bytes,
    header: Header,
    ct_for: Callable[[int, int], memoryview],
    dest: memoryview,
    *,
    parallel: bool,
    arrivals: Callable[[int, memoryview], None] | None = None,
    ring: int | None = None,
) -> None:
    """Verify and decrypt every segment into ``dest``.

    ``ct_for(k, n)`` gives the view holding segment k's ``n`` bytes; ``arrivals(k, view)``, when
    given, fills it first (a stream). With ``ring`` slots that wrap, segment k is not read before
    segment k - ring has been decrypted out of the same slot.

    On any failure every byte written to ``dest[:length]`` is wiped before the error propagates:
    ``decrypt_into`` writes plaintext before it checks the tag.

    Raises:
        DecryptionError: a segment did not verify; or whatever ``arrivals`` raised.
    """
    seg, length = header.segment_size, header.length
    nseg = n_segments(length, seg)
    prefix = channel_id + header.raw

    def one(k: int, ct: memoryview) -> None:
        lo, hi = k * seg, min(length, (k + 1) * seg)
        aead.decrypt_into(NONCE.pack(header.epoch, header.counter + k), ct, prefix + SEG.pack(k, k == nseg - 1), dest[lo:hi])

    inline = not parallel or nseg == 1
    futures: list[Future[None]] = []
    try:
        for k in range(nseg):
            ct = ct_for(k, min(seg, length - k * seg) + TAG)
            if arrivals is not None:
                if ring is not None and not inline and k >= ring:
                    futures[k - ring].result()  # the slot's previous segment is decrypted
                arrivals(k, ct)
            if inline:
                one(k, ct)
            else:
                futures.append(_pool().submit(one, k, ct))
        for f in futures:
            f.result()
    except BaseException as exc:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()  # let running workers finish before wiping
        dest[:length] = bytes(length)
        if isinstance(exc, InvalidTag):
            raise DecryptionError() from exc
        raise
