"""FileSource: reload on change, and never a mismatched certificate/key pair, even mid-write."""

from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives import serialization

from ztid.devca import DevCA
from ztid.errors import SourceError, UsageError
from ztid.source_files import FileSource
from ztid.spiffeid import TrustDomain
from ztid.svid import X509Svid

DEV = TrustDomain("dev.local")


@pytest.fixture
def ca() -> DevCA:
    return DevCA.create("dev.local")


@pytest.fixture
def files(tmp_path, ca):
    cert, key, bundle = tmp_path / "svid.pem", tmp_path / "svid.key", tmp_path / "bundle.pem"
    svid = ca.issue("spiffe://dev.local/training")
    cert.write_bytes(svid.chain_pem())
    key.write_bytes(svid.key_pem())
    bundle.write_bytes(ca.bundle().to_pem())
    return cert, key, bundle


def _atomic_write(path, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _matches(snap) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return snap.svid.private_key.public_key().public_bytes(*der) == snap.svid.leaf.public_key().public_bytes(*der)


def test_loads_svid_and_bundles(files, ca) -> None:
    with FileSource(*files) as src:
        snap = src.snapshot()
        assert str(snap.svid.spiffe_id) == "spiffe://dev.local/training"
        assert snap.bundles[DEV].x509_authorities == (ca.root,)
        assert src.reload() is False  # nothing changed


def test_reload_publishes_rotated_files(files, ca, wait) -> None:
    cert, key, _ = files
    with FileSource(*files, poll_interval=0.05) as src:
        first = src.snapshot()
        got = []
        src.subscribe(got.append)
        new = ca.issue("spiffe://dev.local/training")
        _atomic_write(key, new.key_pem())
        _atomic_write(cert, new.chain_pem())
        wait(lambda: got, what="the poller to pick up the new files")
        assert got[-1].svid.leaf == new.leaf
        assert got[-1].generation > first.generation
        assert src.snapshot().svid.leaf == new.leaf


def test_certificate_without_its_key_yet_keeps_the_old_pair(files, ca) -> None:
    cert, key, _ = files
    with FileSource(*files, poll_interval=3600) as src:
        old = src.snapshot()
        new = ca.issue("spiffe://dev.local/training")
        cert.write_bytes(new.chain_pem())  # torn: the key file still holds the old key
        assert src.reload() is False
        assert src.snapshot() is old
        assert "does not match" in str(src.last_error)
        key.write_bytes(new.key_pem())
        assert src.reload() is True
        assert src.snapshot().svid.leaf == new.leaf and _matches(src.snapshot())


@pytest.mark.parametrize("which", ["cert", "key", "bundle"])
def test_half_written_or_missing_file_keeps_the_last_good_snapshot(files, which) -> None:
    cert, key, bundle = files
    path = {"cert": cert, "key": key, "bundle": bundle}[which]
    with FileSource(*files, poll_interval=3600) as src:
        old = src.snapshot()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert src.reload() is False and src.snapshot() is old
        path.unlink()
        assert src.reload() is False and src.snapshot() is old
        path.write_bytes(data)
        src.reload()
        assert src.snapshot().svid.leaf == old.svid.leaf


def test_bundle_change_replaces_the_trust_domains_bundle(files, ca) -> None:
    _, _, bundle = files
    other = DevCA.create("dev.local")
    with FileSource(*files, poll_interval=3600) as src:
        _atomic_write(bundle, other.bundle().to_pem())
        assert src.reload() is True
        assert src.snapshot().bundles[DEV].x509_authorities == (other.root,)  # replaced, not merged


def test_concurrent_non_atomic_rewrites_never_serve_a_mismatched_pair(files, ca) -> None:
    cert, key, _ = files
    svids = [ca.issue("spiffe://dev.local/training") for _ in range(2)]
    stop = threading.Event()

    def writer() -> None:  # in-place writes, certificate first then key: maximally torn
        i = 0
        while not stop.is_set():
            s = svids[i % 2]
            cert.write_bytes(s.chain_pem())
            key.write_bytes(s.key_pem())
            i += 1

    with FileSource(*files, poll_interval=3600) as src:
        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(400):
                src.reload()
                assert _matches(src.snapshot())
        finally:
            stop.set()
            t.join()
        src.reload()  # once the writer is done, the last complete pair is served
        assert _matches(src.snapshot())
        assert src.snapshot().svid.leaf == X509Svid.load(cert, key).leaf


def test_invalid_files_at_start_are_a_source_error(files, ca) -> None:
    cert, key, bundle = files
    key.write_bytes(ca.issue("spiffe://dev.local/other").key_pem())
    with pytest.raises(SourceError, match="does not match"):
        FileSource(cert, key, bundle)
    with pytest.raises(UsageError):
        FileSource(cert, key, [])


def test_closed_source_raises(files) -> None:
    src = FileSource(*files)
    src.close()
    with pytest.raises(SourceError, match="closed"):
        src.snapshot()
    assert src.reload() is False


def test_sources_are_reachable_from_ztid_source_without_importing_grpc_eagerly() -> None:
    import subprocess
    import sys

    code = ("import sys, ztid.source as s; assert 'grpc' not in sys.modules; "
            "from ztid.source import FileSource, WorkloadApiSource; print(FileSource.__module__, WorkloadApiSource.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ztid.source_files", "ztid.source_workload"]


def test_bad_arguments_are_usage_errors(files) -> None:
    cert, key, bundle = files
    with pytest.raises(UsageError):
        FileSource(None, key, bundle)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        FileSource(cert, key, bundle, poll_interval=0)
