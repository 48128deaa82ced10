"""Sealed datasets through the key service: seal, read, seek, lease expiry, revocation, fork, KEK rotation and rewrap."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
import time

import pytest
from keyd_helpers import INFERENCE, PIPELINE, TRAINING

from ztid.crypto import dataset as sealed_data
from ztid.crypto.sealed import read_header
from ztid.errors import CryptoError, DecryptionError, KeyReleaseError, UsageError


def _seal(k, plain_dir, out, **kw):
    return sealed_data.seal_dataset(plain_dir, out, dataset="imagenet", target="data-store", key_client=k.client(PIPELINE),
                                    segment_size=4096, **kw)


def _wait_out(lease) -> None:
    while lease.remaining() > 0:
        time.sleep(0.05)


def test_seal_dataset_and_read_back(keyd, plain_dir, tmp_path):
    k = keyd()
    seen = []
    report = _seal(k, plain_dir, tmp_path / "sealed", progress=lambda done, total, name: seen.append((done, total, name)))
    assert report.files == ("train-000.bin", "train-001.bin", "val/val-000.bin")
    assert seen[-1][0] == seen[-1][1] == 370_001
    headers = []
    for name in report.files:
        with open(tmp_path / "sealed" / (name + ".ztid"), "rb") as f:
            headers.append(read_header(f))
    assert len({h.wrapped_key for h in headers}) == 1 and {h.name for h in headers} == set(report.files)  # one key per dataset
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING))
    assert ds.dataset == "imagenet" and len(ds) == 3
    for entry in ds:
        assert entry.read_bytes() == (plain_dir / entry.name).read_bytes()
    unwraps = [line for line in k.log_lines() if line.get("extra", {}).get("method") == "UnwrapKey"]
    assert len(unwraps) == 1  # the three files shared one lease


def test_open_is_seekable_and_verified(keyd, plain_dir, tmp_path):
    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    plain = (plain_dir / "train-000.bin").read_bytes()
    path = tmp_path / "sealed" / "train-000.bin.ztid"
    with sealed_data.open(path, key_client=k.client(TRAINING), dataset="imagenet", name="train-000.bin") as f:
        assert f.seekable() and f.size == len(plain)
        f.seek(123_457)
        assert f.read(10_000) == plain[123_457:133_457]
        f.seek(-5, io.SEEK_END)
        assert f.read() == plain[-5:]
        buffered = io.BufferedReader(f, buffer_size=8192)
        buffered.seek(0)
        assert buffered.read() == plain
    with pytest.raises(CryptoError):  # the header names another file
        sealed_data.open(path, key_client=k.client(TRAINING), name="train-001.bin")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # a middle segment: opening works, reading through it fails
    path.write_bytes(bytes(data))
    with sealed_data.open(path, key_client=k.client(TRAINING)) as f:
        assert f.read(1000) == plain[:1000]
        with pytest.raises(DecryptionError):
            f.read()
    data[-100] ^= 1  # the last segment is verified when the file opens
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        sealed_data.open(path, key_client=k.client(TRAINING))


def test_inference_cannot_open_the_dataset(keyd, plain_dir, tmp_path):
    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    with pytest.raises(KeyReleaseError, match="explicit_deny"):
        sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(INFERENCE)).acquire()


def test_loader_needs_a_way_to_the_key_service(tmp_path):
    with pytest.raises(UsageError):
        sealed_data.open(tmp_path / "x.ztid")


def test_lease_expiry_stops_reads_when_the_svid_has_expired(keyd, plain_dir, tmp_path):
    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    client = k.client(TRAINING, ttl=dt.timedelta(seconds=3))  # the lease cannot outlive this SVID
    f = sealed_data.open(tmp_path / "sealed" / "train-000.bin.ztid", key_client=client)
    assert f.read(100)
    _wait_out(f._lease)
    while dt.datetime.now(dt.timezone.utc) < client._source.snapshot().svid.not_after:
        time.sleep(0.05)
    with pytest.raises(KeyReleaseError):  # renewal needs a valid SVID; this one has expired
        f.read(100)
    assert f.closed


def test_revocation_stops_reads_within_the_lease(keyd, plain_dir, tmp_path):
    k = keyd(max_lease=dt.timedelta(seconds=1))
    _seal(k, plain_dir, tmp_path / "sealed")
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING))
    f = ds.open("train-000.bin")
    lease = f._lease
    _wait_out(lease)
    assert f.read(100)  # the lease ended; the reader renewed it with its still-valid SVID
    assert f._lease is not lease
    k.revoke_training_read()
    _wait_out(f._lease)
    with pytest.raises(KeyReleaseError, match="no_matching_rule"):
        f.read(100)
    with pytest.raises(KeyReleaseError):
        ds.open("train-001.bin")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_uses_the_inherited_lease_and_stops_at_its_end(keyd, plain_dir, tmp_path):
    k = keyd(max_lease=dt.timedelta(seconds=2))  # the child must read before it ends, even on a loaded box
    _seal(k, plain_dir, tmp_path / "sealed")
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING))
    ds.acquire()
    expected = (plain_dir / "train-001.bin").read_bytes()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no gRPC, only the inherited lease
        code = 0
        try:
            code |= 0 if ds.open("train-001.bin").read() == expected else 1
            _wait_out(ds.acquire())
            try:
                ds.open("train-001.bin")
                code |= 2
            except KeyReleaseError as exc:
                code |= 0 if "forked worker" in str(exc) else 4
        except BaseException:
            code |= 8
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    result = os.read(r, 1)
    os.waitpid(pid, 0)
    assert result == b"\0", result
    sys.stdout.flush()


def test_kek_rotation_and_rewrap_through_the_service(keyd, plain_dir, tmp_path):
    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    old = (tmp_path / "sealed" / "train-000.bin.ztid").read_bytes()
    k.keyring.rotate("default")
    with pytest.raises(KeyReleaseError, match="no_matching_rule"):  # training may read, not rewrap
        sealed_data.rewrap_dataset(tmp_path / "sealed", key_client=k.client(TRAINING))
    headers = sealed_data.rewrap_dataset(tmp_path / "sealed", key_client=k.client(PIPELINE))
    assert {h.key_version for h in headers} == {2}
    rewraps = [line for line in k.log_lines() if line.get("extra", {}).get("method") == "RewrapKey" and line["allowed"]]
    assert len(rewraps) == 1  # one wrapped key per dataset, rewrapped once
    new = (tmp_path / "sealed" / "train-000.bin.ztid").read_bytes()
    assert new[-1000:] == old[-1000:]  # the stream bytes are untouched
    k.keyring.set_min_decrypt_version("default", 2)
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING))
    assert ds.open("train-001.bin").read() == (plain_dir / "train-001.bin").read_bytes()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "train-000.bin.ztid").write_bytes(old)  # a copy made before the rewrap: version 1 is archived
    with pytest.raises(KeyReleaseError, match="key_unavailable"):
        sealed_data.SealedDataset(stale, key_client=k.client(TRAINING)).acquire()


@pytest.mark.parametrize("threads", [1, 2])
def test_large_reads_with_decrypt_threads_verify_and_zero_on_tamper(keyd, plain_dir, tmp_path, threads):
    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING), decrypt_threads=threads)
    plain = (plain_dir / "train-000.bin").read_bytes()
    buf = bytearray(len(plain))
    with ds.open("train-000.bin") as f:
        f.seek(1001)  # partial segments at both ends, ~70 whole ones between, split across the threads
        assert f.readinto(memoryview(buf)[: len(plain) - 2002]) == len(plain) - 2002
        assert buf[: len(plain) - 2002] == plain[1001:-1001]
    path = tmp_path / "sealed" / "train-000.bin.ztid"
    data = bytearray(path.read_bytes())
    data[len(data) // 4] ^= 1  # in the first half of the read: the pool thread's share when threads=2
    path.write_bytes(bytes(data))
    buf[:] = b"\xa5" * len(buf)
    with ds.open("train-000.bin") as f, pytest.raises(DecryptionError):
        f.readinto(buf)
    assert buf == bytes(len(buf))  # nothing of the range survives, not even the segments that verified


def test_forked_child_reads_with_its_own_decrypt_threads(keyd, plain_dir, tmp_path):
    from ztid.crypto import _parallel

    k = keyd()
    _seal(k, plain_dir, tmp_path / "sealed")
    ds = sealed_data.SealedDataset(tmp_path / "sealed", key_client=k.client(TRAINING), decrypt_threads=2)
    expected = (plain_dir / "train-000.bin").read_bytes()
    assert ds.open("train-000.bin").read() == expected  # the parent's pool has started
    assert _parallel._pool is not None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        code = 1
        try:
            code = 0 if ds.open("train-000.bin").read() == expected and _parallel._pool is not None else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    import select

    ready, _, _ = select.select([r], [], [], 30)
    result = os.read(r, 1) if ready else b"hung"
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(r)
    assert result == b"\0", result
