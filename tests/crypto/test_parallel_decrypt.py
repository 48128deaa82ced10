"""Random access with several decrypt threads: same bytes as one thread, all-or-nothing on tamper, safe across fork."""

from __future__ import annotations

import io
import os
import select
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.crypto import _parallel, stream
from ztid.crypto._parallel import run_parts
from ztid.crypto.random_access import RandomAccessDecryptor
from ztid.errors import DecryptionError, UsageError

AD = b"parallel"
SEG = 256  # tiny segments: a read of a few KiB spans many, so every split and edge case is cheap to reach


def _stream(key: bytes, size: int, segment: int = SEG) -> tuple[bytes, bytes]:
    plain = os.urandom(size)
    return plain, stream.encrypt(key, plain, AD, segment_size=segment)


class _Recorder:
    """Wraps a SegmentCipher: records which thread opened each segment and, on demand, holds the
    caller's first segment until a pool thread has started, so a test knows the pool took part."""

    def __init__(self, cipher, *, hold_caller: bool) -> None:
        self._cipher = cipher
        self.threads: dict[int, str] = {}
        self.pool_started = threading.Event()
        self._hold = hold_caller

    def open_into(self, index, last, ciphertext, out) -> None:
        name = threading.current_thread().name
        self.threads[index] = name
        if name.startswith("ztid-decrypt"):
            self.pool_started.set()
        elif self._hold:
            self.pool_started.wait(10)
        self._cipher.open_into(index, last, ciphertext, out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 6000), segment=st.sampled_from([57, 100, 256, 1000]), threads=st.integers(1, 4),
       data=st.data(), from_file=st.booleans())
def test_any_range_with_any_thread_count_equals_the_plaintext(key, size, segment, threads, data, from_file):
    plain, ct = _stream(key, size, segment)
    source = io.BytesIO(ct) if from_file else ct
    dec = RandomAccessDecryptor(key, source, AD, segment_size=segment, threads=threads)
    assert dec.size == size
    for _ in range(3):  # several reads on one decryptor: the cached segment moves between them
        offset = data.draw(st.integers(0, size + 10))
        length = data.draw(st.integers(0, size + 10))
        buf = bytearray(b"\xa5" * length)
        n = dec.readinto_at(buf, offset)
        assert n == max(0, min(length, size - offset))
        assert bytes(buf[:n]) == plain[offset : offset + n]
        assert buf[n:] == b"\xa5" * (length - n)  # nothing written past the plaintext's end
    dec.close()


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_a_large_read_is_split_across_pool_threads_at_segment_boundaries(key, threads):
    plain, ct = _stream(key, 40 * SEG)
    dec = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=threads)
    dec._cipher = rec = _Recorder(dec._cipher, hold_caller=True)
    offset = 3 * SEG + 5  # partial segments at both ends, whole ones between
    buf = bytearray(30 * SEG)
    assert dec.readinto_at(buf, offset) == len(buf)
    assert bytes(buf) == plain[offset : offset + len(buf)]
    pooled = {i for i, name in rec.threads.items() if name.startswith("ztid-decrypt")}
    assert pooled and len(pooled) < len(rec.threads)  # both the pool and the caller decrypted


@pytest.mark.parametrize("where", ["pool", "caller", "edge"])
def test_a_tampered_segment_in_any_thread_fails_the_whole_read_and_zeroes_it(key, where):
    plain, ct = _stream(key, 40 * SEG)
    offset, length = 3 * SEG + 5, 30 * SEG
    probe = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=2)
    probe._cipher = rec = _Recorder(probe._cipher, hold_caller=True)
    probe.readinto_at(bytearray(length), offset)
    pooled = sorted(i for i, n in rec.threads.items() if n.startswith("ztid-decrypt"))
    mine = sorted(i for i, n in rec.threads.items() if not n.startswith("ztid-decrypt") and i != 39)
    victim = {"pool": pooled[len(pooled) // 2], "caller": mine[len(mine) // 2], "edge": mine[-1]}[where]
    bad = bytearray(ct)
    bad[victim * SEG + 100] ^= 1  # a byte inside segment `victim` (segment 0 starts after the header)
    dec = RandomAccessDecryptor(key, bytes(bad), AD, segment_size=SEG, threads=2)
    dec._cipher = rec = _Recorder(dec._cipher, hold_caller=True)
    buf = bytearray(b"\xa5" * length)
    with pytest.raises(DecryptionError):
        dec.readinto_at(buf, offset)
    assert victim in rec.threads and rec.threads[victim].startswith("ztid-decrypt") == (where == "pool")
    assert buf == bytes(length)  # all of it zeroed, also the parts other threads verified
    clean = bytearray(SEG)
    dec.readinto_at(clean, 0)  # untouched segments still read
    assert bytes(clean) == plain[:SEG]


def test_run_parts_waits_for_every_started_part_before_raising():
    started, finished = threading.Event(), []

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        finished.append("slow")

    def fails() -> None:
        started.wait(10)
        raise DecryptionError()

    with pytest.raises(DecryptionError):
        run_parts([slow, fails])
    assert finished == ["slow"]  # the started part finished before the error reached the caller


def test_after_fork_the_child_builds_its_own_pool(key):
    plain, ct = _stream(key, 64 * SEG)
    dec = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=2)
    buf = bytearray(60 * SEG)
    dec.readinto_at(buf, 0)  # the parent's pool is running now
    parent_pool = _parallel._pool
    assert parent_pool is not None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = b"0"
        try:
            fresh = _parallel._pool is None
            dec._cipher = rec = _Recorder(dec._cipher, hold_caller=True)
            out = bytearray(60 * SEG)
            dec.readinto_at(out, 7)
            pooled = any(n.startswith("ztid-decrypt") for n in rec.threads.values())
            ok = b"1" if fresh and pooled and bytes(out) == plain[7 : 7 + len(out)] else b"2"
        finally:
            os.write(w, ok)
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 30)
        got = os.read(r, 1) if ready else b"hung"
    finally:
        os.close(r)
        if not got or got == b"hung":
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert got == b"1"
    assert _parallel._pool is parent_pool  # the parent's pool is untouched
    assert dec.readinto_at(buf, 0) == len(buf) and bytes(buf) == plain[: len(buf)]


@pytest.mark.parametrize("bad", [0, 5, "2", 2.0, True])
def test_threads_must_be_a_small_int(key, bad):
    _, ct = _stream(key, 10)
    with pytest.raises(UsageError, match="threads must be an int from 1 to 4"):
        RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=bad)


def test_close_zeroes_and_returns_the_cached_segment(key):
    _, ct = _stream(key, 10 * SEG)
    dec = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=1)
    dec.readinto_at(bytearray(10), 3 * SEG)  # a partial read: segment 3 goes through the cache
    scratch = dec._pt_buf
    assert scratch is not None and any(scratch)
    dec.close()
    assert scratch == bytes(len(scratch))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 5000), segment=st.sampled_from([57, 100, 256]), enc=st.integers(1, 4), dec=st.integers(1, 4))
def test_stream_one_shot_calls_give_the_same_bytes_with_any_thread_count(key, size, segment, enc, dec):
    plain = os.urandom(size)
    ct = bytearray(stream.ciphertext_size(size, segment_size=segment))
    assert stream.encrypt_into(key, plain, AD, ct, segment_size=segment, threads=enc) == len(ct)
    assert stream.decrypt(key, ct, AD, segment_size=segment) == plain  # the single-threaded path agrees
    out = bytearray(size)
    assert stream.decrypt_into(key, ct, AD, out, segment_size=segment, threads=dec) == size
    assert out == plain


def test_stream_decrypt_into_zeroes_everything_when_one_run_fails(key):
    plain, ct = _stream(key, 40 * SEG)
    bad = bytearray(ct)
    bad[3 * SEG + 10] ^= 1  # segment 3: in the first of two runs (the one offered to the pool)
    out = bytearray(b"\xa5" * len(plain))
    with pytest.raises(DecryptionError):
        stream.decrypt_into(key, bad, AD, out, segment_size=SEG, threads=2)
    assert out == bytes(len(out))
    with pytest.raises(UsageError, match="threads"):
        stream.decrypt_into(key, ct, AD, out, segment_size=SEG, threads=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_whole_reads_return_bytes_filled_in_place(key, threads):
    plain, ct = _stream(key, 30 * SEG + 7)
    dec = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=threads)
    for offset, length in ((0, len(plain)), (5, 10 * SEG), (len(plain) - 3, 100), (len(plain), 10)):
        got = dec.read_range(offset, length)
        assert type(got) is bytes and got == plain[offset : offset + length]
    reader = dec.reader()
    reader.seek(SEG + 1)
    got = reader.readall()
    assert type(got) is bytes and got == plain[SEG + 1 :]
    assert _parallel.filled_bytes(10, lambda view: 4) == bytes(4)  # a short fill is cut to its length


def test_a_failed_whole_read_raises_and_hands_out_nothing(key):
    _, ct = _stream(key, 30 * SEG)
    bad = bytearray(ct)
    bad[20 * SEG + 3] ^= 1
    dec = RandomAccessDecryptor(key, bytes(bad), AD, segment_size=SEG, threads=2)
    with pytest.raises(DecryptionError):
        dec.read_range(0, 30 * SEG)


def test_an_interrupt_while_waiting_still_waits_for_the_pool_part():
    import signal

    started, finished = threading.Event(), []

    def slow() -> None:
        started.set()
        time.sleep(0.4)
        finished.append("slow")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            run_parts([slow, lambda: started.wait(10)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert finished == ["slow"]  # the interrupt surfaced only once the part writing into the buffer was done


def test_no_thread_holds_the_callers_buffer_after_a_read_returns(key):
    plain, ct = _stream(key, 40 * SEG)
    for _ in range(200):  # the pool's work item may outlive the call by a moment: it must hold nothing
        dec = RandomAccessDecryptor(key, ct, AD, segment_size=SEG, threads=4)
        buf = bytearray(30 * SEG)
        dec.readinto_at(buf, 0)
        buf.extend(b"x")  # BufferError if any view of buf were still alive
        assert buf[:-1] == plain[: 30 * SEG]
