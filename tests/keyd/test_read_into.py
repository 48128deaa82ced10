"""SealedDataset.read_into: a whole file decrypted into a caller's (reused) buffer, verified, zeroed on failure, lease-checked."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyd_helpers import PIPELINE, TRAINING

from ztid.crypto import dataset as sealed_data
from ztid.crypto.sealed import seal_file
from ztid.errors import DecryptionError, KeyReleaseError, UsageError


@pytest.fixture
def one_key(keyd, tmp_path):
    """A fresh data key for dataset "imagenet" and a function sealing ``data`` as file ``name`` with it."""
    k = keyd()
    fresh = k.client(PIPELINE).new_key("imagenet", "data-store")
    out = tmp_path / "sealed"
    out.mkdir()

    def seal(name: str, data: bytes) -> None:
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        w = fresh.wrapped
        seal_file(src, out / (name + sealed_data.SUFFIX), data_key=fresh.lease.key(), wrapped_key=w.wrapped_key,
                  dataset="imagenet", name=name, key_id=w.key_id, key_version=w.version, segment_size=4096)

    return k, out, seal


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 5 * 4096 + 100), slack=st.integers(0, 5000), threads=st.sampled_from([1, 2]),
       data=st.data())
def test_read_into_matches_plaintext_for_any_size(one_key, size, slack, threads, data):
    k, out, seal = one_key
    plain = data.draw(st.binary(min_size=size, max_size=size)) if size < 64 else bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    seal("f.bin", plain)
    ds = sealed_data.SealedDataset(out, key_client=k.client(TRAINING), decrypt_threads=threads)
    buf = bytearray(b"\xa5" * (size + slack))  # a reused buffer holds an older, longer item
    assert ds.read_into("f.bin", buf) == size
    assert buf[:size] == plain and buf[size:] == b"\xa5" * slack  # nothing written past the file


def test_read_into_refuses_short_or_readonly_buffers_without_writing(one_key):
    k, out, seal = one_key
    seal("f.bin", b"x" * 10_000)
    ds = sealed_data.SealedDataset(out, key_client=k.client(TRAINING))
    short = bytearray(9_999)
    with pytest.raises(UsageError, match="10000 bytes, the buffer only 9999"):
        ds.read_into("f.bin", short)
    assert short == bytes(9_999)
    with pytest.raises(UsageError, match="writable"):
        ds.read_into("f.bin", bytes(10_000))
    with pytest.raises(UsageError, match="bytes-like"):
        ds.read_into("f.bin", "not a buffer")
    with pytest.raises(UsageError, match="no file"):
        ds.read_into("nope", bytearray(1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", [0.05, 0.5, 0.999])
def test_tampered_file_raises_and_leaves_the_buffer_zeroed(one_key, threads, where):
    k, out, seal = one_key
    plain = bytes(range(256)) * 400  # 102400 bytes: 26 segments, split across the threads
    seal("f.bin", plain)
    path = out / "f.bin.ztid"
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0x40
    path.write_bytes(bytes(raw))
    ds = sealed_data.SealedDataset(out, key_client=k.client(TRAINING), decrypt_threads=threads)
    buf = bytearray(b"\xa5" * (len(plain) + 7))
    with pytest.raises(DecryptionError):
        ds.read_into("f.bin", buf)
    if where > 0.99:  # the last segment is verified when the file opens: refused before anything is written
        assert buf == b"\xa5" * len(buf)
    else:
        assert buf[: len(plain)] == bytes(len(plain))  # no plaintext survives, not even of segments that verified
        assert buf[len(plain) :] == b"\xa5" * 7


def test_read_into_checks_the_lease(keyd, tmp_path):
    import datetime as dt

    k = keyd(max_lease=dt.timedelta(seconds=1))
    fresh = k.client(PIPELINE).new_key("imagenet", "data-store")
    out = tmp_path / "sealed"
    out.mkdir()
    src = tmp_path / "src.bin"
    src.write_bytes(b"y" * 5000)
    w = fresh.wrapped
    seal_file(src, out / "f.bin.ztid", data_key=fresh.lease.key(), wrapped_key=w.wrapped_key, dataset="imagenet",
              name="f.bin", key_id=w.key_id, key_version=w.version, segment_size=4096)
    cache = sealed_data.KeyCache(k.client(TRAINING))
    ds = sealed_data.SealedDataset(out, keys=cache)
    lease = ds.acquire()
    inherited = sealed_data.SealedDataset(out, keys=sealed_data.KeyCache(None))
    inherited.keys._leases = dict(cache._leases)  # as a forked worker holds it: a lease and no way to renew
    buf = bytearray(5000)
    assert inherited.read_into("f.bin", buf) == 5000 and buf == b"y" * 5000
    while lease.remaining() > 0:
        time.sleep(0.05)
    buf[:] = b"\xa5" * 5000
    with pytest.raises(KeyReleaseError):
        inherited.read_into("f.bin", buf)
    assert buf == b"\xa5" * 5000  # refused before anything was decrypted
