"""The PyTorch adapter: DataLoader with 2 fork workers reads a sealed dataset on the parent's lease, and stops at its end."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pytest
from keyd_helpers import INFERENCE, PIPELINE, TRAINING

from ztid.crypto import dataset as sealed_data
from ztid.errors import DecryptionError, KeyReleaseError, UsageError

torch = pytest.importorskip("torch")  # the torch extra; `make test` installs it

pytestmark = pytest.mark.torch


@pytest.fixture
def sealed(keyd, plain_dir, tmp_path):
    def make(**kw):
        k = keyd(**kw)
        sealed_data.seal_dataset(plain_dir, tmp_path / "sealed", dataset="imagenet", target="data-store",
                                 key_client=k.client(PIPELINE), segment_size=4096)
        return k, tmp_path / "sealed"

    return make


def test_importing_the_loaders_does_not_import_torch():
    code = "import sys, ztid.crypto.dataset, ztid.keyd.client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _unwraps(k) -> int:
    return sum(1 for line in k.log_lines() if line.get("extra", {}).get("method") == "UnwrapKey")


def test_map_dataset_two_fork_workers(sealed, plain_dir):
    from ztid.crypto.torch import SealedDataLoader, SealedMapDataset

    k, root = sealed()
    ds = SealedMapDataset(sealed_data.SealedDataset(root, key_client=k.client(TRAINING)),
                          transform=lambda name, data: (name, len(data), data[:16]))
    loader = SealedDataLoader(ds, batch_size=None, num_workers=2)
    got = {name: (n, head) for name, n, head in loader}
    for name, (n, head) in got.items():
        plain = (plain_dir / name).read_bytes()
        assert (n, head) == (len(plain), plain[:16])
    assert sorted(got) == ["train-000.bin", "train-001.bin", "val/val-000.bin"]
    assert list(loader)  # a second epoch: the lease is still long, no new request
    assert _unwraps(k) == 1  # fetched once, in the parent; the workers asked nobody


def test_iterable_dataset_two_fork_workers(sealed, plain_dir):
    from ztid.crypto.torch import SealedDataLoader, SealedIterableDataset

    k, root = sealed()

    def records(name, f):  # fixed 1000-byte records, as a shard reader would yield samples
        while chunk := f.read(1000):
            yield torch.frombuffer(bytearray(chunk.ljust(1000, b"\0")), dtype=torch.uint8)

    ds = SealedIterableDataset(sealed_data.SealedDataset(root, key_client=k.client(TRAINING)), samples=records)
    batches = list(SealedDataLoader(ds, batch_size=8, num_workers=2))
    total = sum(b.shape[0] for b in batches)
    assert total == 300 + 71  # ceil(300000/1000) + ceil(70001/1000) records
    assert _unwraps(k) == 1


def test_refused_loader_never_starts(sealed):
    from ztid.crypto.torch import SealedMapDataset

    k, root = sealed()
    with pytest.raises(KeyReleaseError, match="explicit_deny"):
        SealedMapDataset(sealed_data.SealedDataset(root, key_client=k.client(INFERENCE)))


def test_spawn_is_refused(sealed):
    from ztid.crypto.torch import SealedDataLoader, SealedMapDataset

    k, root = sealed()
    ds = SealedMapDataset(sealed_data.SealedDataset(root, key_client=k.client(TRAINING)))
    with pytest.raises(UsageError, match="fork"):
        SealedDataLoader(ds, num_workers=2, multiprocessing_context="spawn")


def test_workers_stop_when_the_lease_ends_and_the_next_epoch_asks_again(sealed):
    from ztid.crypto.torch import SealedDataLoader, SealedMapDataset

    k, root = sealed(max_lease=dt.timedelta(seconds=3))  # room for two fork workers to start on a loaded CI box

    class WaitsForTheLease(SealedMapDataset):
        def __getitem__(self, index):
            if index == 2:  # in the worker: outlive the inherited lease, then read
                while self.lease.remaining() > 0:
                    time.sleep(0.05)
            return super().__getitem__(index)

    ds = WaitsForTheLease(sealed_data.SealedDataset(root, key_client=k.client(TRAINING)), transform=lambda n, d: n,
                          renew_below=0.5)
    with pytest.raises(KeyReleaseError, match="forked worker"):
        list(SealedDataLoader(ds, batch_size=None, num_workers=2))
    assert _unwraps(k) == 1
    # The next epoch: the parent renews (its SVID is valid, the policy allows) before the workers fork.
    # The renewed lease is long, so slow forks on a loaded box cannot outlive it (that flaked at 3 s).
    ds2 = SealedMapDataset(ds._h.sealed, transform=lambda n, d: n, renew_below=0.5)
    while ds2.lease.remaining() > 0:
        time.sleep(0.05)
    k.service.max_lease = dt.timedelta(seconds=60)
    assert sorted(SealedDataLoader(ds2, batch_size=None, num_workers=2)) == sorted(ds2._h.sealed.names)
    assert ds2.lease.remaining() > 30  # renewed in the parent before the fork
    # ...until the policy is revoked: then the parent's renewal is refused and no worker starts
    # (renew_below above the lease's remaining time makes the next epoch renew first).
    k.revoke_training_read()
    ds3 = SealedMapDataset(ds2._h.sealed, transform=lambda n, d: n, renew_below=120)
    with pytest.raises(KeyReleaseError, match="no_matching_rule"):
        list(SealedDataLoader(ds3, batch_size=None, num_workers=2))


def test_fork_workers_after_the_parent_pool_started_read_with_their_share_of_threads(sealed, plain_dir):
    from ztid.crypto._parallel import default_threads
    from ztid.crypto.torch import SealedDataLoader, SealedIterableDataset

    k, root = sealed()
    inner = sealed_data.SealedDataset(root, key_client=k.client(TRAINING), decrypt_threads=2)
    assert inner.open("train-000.bin").readall() == (plain_dir / "train-000.bin").read_bytes()  # parent pool runs
    ds = SealedIterableDataset(inner, samples=lambda name, f: [(name, f._dec.threads, f.readall())])
    got = {name: (threads, data) for name, threads, data in SealedDataLoader(ds, batch_size=None, num_workers=2)}
    assert sorted(got) == ["train-000.bin", "train-001.bin", "val/val-000.bin"]
    for name, (threads, data) in got.items():
        assert data == (plain_dir / name).read_bytes()
        assert threads == max(1, min(2, default_threads() // 2))


def test_map_dataset_reusing_one_buffer_per_worker(sealed, plain_dir):
    from ztid.crypto.torch import SealedDataLoader, SealedMapDataset

    k, root = sealed()
    inner = sealed_data.SealedDataset(root, key_client=k.client(TRAINING))
    plain = {name: (plain_dir / name).read_bytes() for name in inner.names}
    seen = []

    def keep(name, data):  # copies what it keeps, as reuse_buffer requires
        seen.append(data)
        return name, torch.frombuffer(data, dtype=torch.uint8).clone().numpy().tobytes() if len(data) else b""

    ds = SealedMapDataset(inner, transform=keep, reuse_buffer=True)
    assert dict(ds[i] for i in range(len(ds))) == plain
    assert len({id(view.obj) for view in seen}) == 1  # in this process, one buffer served every item
    # Two fork workers, each with its own buffer; items are collated in batches after __getitem__ returned.
    loader = SealedDataLoader(ds, batch_size=2, num_workers=2)
    got = {name: data for names, datas in loader for name, data in zip(names, datas)}
    assert got == plain
    assert _unwraps(k) == 1


def test_map_dataset_reuse_buffer_needs_a_transform_and_still_verifies(sealed, plain_dir):
    from ztid.crypto.torch import SealedDataLoader, SealedMapDataset

    k, root = sealed()
    inner = sealed_data.SealedDataset(root, key_client=k.client(TRAINING))
    with pytest.raises(UsageError, match="needs a transform"):
        SealedMapDataset(inner, reuse_buffer=True)
    ds = SealedMapDataset(inner, transform=lambda name, view: (name, bytes(view)), reuse_buffer=True)
    index = inner.names.index("train-000.bin")
    assert ds[index][1] == (plain_dir / "train-000.bin").read_bytes()  # the buffer now holds it
    path = root / "train-000.bin.ztid"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        ds[index]
    assert ds._buffers.buf == bytes(len(ds._buffers.buf))  # no plaintext left, not even the segments that verified
    with pytest.raises(DecryptionError):
        list(SealedDataLoader(ds, batch_size=None, num_workers=2))
