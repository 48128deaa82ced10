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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cryptography.exceptions import InvalidTag

from ztid.crypto.channel_frame import TAG, Header, n_segments
from ztid.errors import DecryptionError

__all__ = ["PARALLEL_MIN", "decrypt_segments", "encrypt_segments"]

NONCE = struct.Struct(">IQ")
SEG = struct.Struct(">IB")
PARALLEL_MIN = 256 << 10
_WINDOW = 4  # segments encrypted ahead of the one being sent (measured: unbounded is slower, cache)

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


def _inline(parallel: bool, nseg: int, length: int) -> bool:
    return not parallel or nseg == 1


def encrypt_segments(aead: Any, channel_id: bytes, header: Header, src: memoryview, out: memoryview, *, parallel: bool) -> Iterator[memoryview]:
    """Encrypt every segment of ``src`` into ``out`` after the header; yield each, in order, once ready."""
    seg, length = header.segment_size, header.length
    nseg = n_segments(length, seg)
    prefix = channel_id + header.raw
    hlen = len(header.raw)

    def one(k: int) -> memoryview:
        lo, hi = k * seg, min(length, (k + 1) * seg)
        o = hlen + lo + k * TAG
        dst = out[o : o + (hi - lo) + TAG]
        aead.encrypt_into(NONCE.pack(header.epoch, header.counter + k), src[lo:hi], prefix + SEG.pack(k, k == nseg - 1), dst)
        return dst

    if _inline(parallel, nseg, length):
        for k in range(nseg):
            yield one(k)
        return
    # A bounded window ahead of the sender: the segment handed to the kernel is still in cache.
    pool, window = _pool(), _WINDOW
    futures: list[Future[memoryview]] = [pool.submit(one, k) for k in range(min(window, nseg))]
    try:
        for k in range(nseg):
            if k + window < nseg:
                futures.append(pool.submit(one, k + window))
            yield futures[k].result()
    finally:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()  # wait: no worker may still write into ``out`` once we return


def decrypt_segments(
    aead: Any, channel_id: bytes, header: Header, ct: memoryview, dest: memoryview, *, parallel: bool, arrivals: Iterator[None] | None = None
) -> None:
    """Verify and decrypt every segment of ``ct`` into ``dest``; ``arrivals`` yields once per segment received.

    On any failure every byte written to ``dest[:length]`` is wiped before the error propagates:
    ``decrypt_into`` writes plaintext before it checks the tag.

    Raises:
        DecryptionError: a segment did not verify; or whatever ``arrivals`` raised.
    """
    seg, length = header.segment_size, header.length
    nseg = n_segments(length, seg)
    prefix = channel_id + header.raw

    def one(k: int) -> None:
        lo, hi = k * seg, min(length, (k + 1) * seg)
        o = lo + k * TAG
        aead.decrypt_into(NONCE.pack(header.epoch, header.counter + k), ct[o : o + (hi - lo) + TAG], prefix + SEG.pack(k, k == nseg - 1), dest[lo:hi])

    inline = _inline(parallel, nseg, length)
    futures: list[Future[None]] = []
    try:
        for k in range(nseg):
            if arrivals is not None:
                next(arrivals)
            if inline:
                one(k)
            else:
                futures.append(_pool().submit(one, k))
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
