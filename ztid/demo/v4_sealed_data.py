"""Demo chapter 4: a sealed dataset, a key service that releases its key by policy, and reads that stop on revocation."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

TD = "ai-platform.example"
KEYD_DNS = "keyd.ai-platform.example"
LEASE = dt.timedelta(seconds=5)  # short, so the revocation below takes effect while you watch
WHO = {
    "pipeline (vision)": f"spiffe://{TD}/ns/vision/sa/pipeline",
    "training job (vision)": f"spiffe://{TD}/ns/vision/sa/training",
    "training job (speech)": f"spiffe://{TD}/ns/speech/sa/training",
    "inference server (vision)": f"spiffe://{TD}/ns/vision/sa/inference",
}
RECORDS, FEATURES = 64, 16  # per shard: float32 features and an int label per record
_RECORD = struct.Struct(f"<{FEATURES}fi")


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Seal, release, refuse, revoke; return whether every outcome matched the policy."""
    from ztid.audit.decisions import DecisionLog
    from ztid.crypto.keys import Keyring
    from ztid.keyd.datasets import DatasetRegistry
    from ztid.keyd.server import serve
    from ztid.keyd.service import KeyService
    from ztid.policy.watch import PolicyWatcher
    from ztid.source import StaticSource
    from ztid.testing import TestCA, bundle_set

    work = story.workdir / "v4"
    work.mkdir(parents=True, exist_ok=True)
    story.title("4. Sealed training data: keys only for SVIDs the policy allows to read")
    ca = TestCA.create(TD)
    policy_path = work / "policy.yaml"
    # A copy, revoked below; the story's own policy file stays as it is.
    shutil.copy(getattr(story, "policy_path", None) or _shipped(), policy_path)
    watcher = PolicyWatcher(policy_path)
    keyring = Keyring.create(work / "keyring.json")
    log = DecisionLog(work / "decisions.log", fsync="never")
    service = KeyService(policy=watcher, backend=keyring, log=log, registry=DatasetRegistry(work / "datasets.json"), max_lease=LEASE)
    server = serve("127.0.0.1:0", service=service,
                   source=StaticSource(ca.issue(f"spiffe://{TD}/keyd/main", dns_names=[KEYD_DNS]), bundle_set(ca)))
    story.say(f"key service on {server.target} (mTLS), KEKs in {work / 'keyring.json'} (0600), max lease {LEASE.seconds}s")
    clients: list[Any] = []

    def client(label: str) -> Any:
        from ztid.keyd.client import KeyClient

        c = KeyClient(server.target, source=StaticSource(ca.issue(WHO[label]), bundle_set(ca)), server_name=KEYD_DNS)
        clients.append(c)
        return c

    try:
        ok = _seal(story, work, client("pipeline (vision)"))
        ok &= _train(story, work, client("training job (vision)"))
        ok &= _refused(story, work, client("inference server (vision)"), client("training job (speech)"))
        ok &= _revoke(story, work, client("training job (vision)"), watcher, policy_path)
        _log_table(story, work)
    finally:
        for c in clients:
            c.close()
        server.stop()
        log.close()
    return ok


def _shipped() -> Path:
    from ztid.demo import default_policy_path

    return default_policy_path()


def _seal(story, work: Path, pipeline: Any) -> bool:  # type: ignore[no-untyped-def]
    import random

    from ztid.crypto.dataset import seal_dataset

    plain = work / "plain"
    plain.mkdir(exist_ok=True)
    rng = random.Random(4)
    for i in range(8):
        shard = b"".join(_RECORD.pack(*(rng.gauss(0, 1) for _ in range(FEATURES)), rng.randrange(10)) for _ in range(RECORDS))
        (plain / f"shard-{i:02d}.bin").write_bytes(shard)
    report = seal_dataset(plain, work / "sealed", dataset="vision-train", target="data-store", tenant="vision",
                          key_client=pipeline)
    shutil.rmtree(plain)
    story.say(f"pipeline sealed {len(report.files)} shards ({report.bytes_in} bytes) of dataset 'vision-train' "
              f"(target data-store, tenant vision) with one data key, KEK {report.key_id} v{report.key_version}")
    story.say("on disk only ciphertext remains: " + ", ".join(p.name for p in sorted((work / "sealed").iterdir())[:3]) + ", ...")
    return len(report.files) == 8


def _decode(name: str, data: bytes) -> Any:
    records = list(_RECORD.iter_unpack(data))
    return os.getpid(), len(records), sum(sum(r[:FEATURES]) for r in records)


def _train(story, work: Path, training: Any) -> bool:  # type: ignore[no-untyped-def]
    from ztid.crypto.dataset import SealedDataset

    ds = SealedDataset(work / "sealed", key_client=training)
    try:
        from ztid.crypto.torch import SealedDataLoader, SealedMapDataset
    except ImportError:
        story.say("(torch is not installed: the training job reads in-process instead of through DataLoader workers)")
        rows = [_decode(e.name, e.read_bytes()) for e in ds]
    else:
        loader = SealedDataLoader(SealedMapDataset(ds, transform=_decode, renew_below=LEASE.total_seconds() - 0.5),
                                  batch_size=None, num_workers=2)
        rows = list(loader)
    pids = sorted({pid for pid, _, _ in rows})
    story.say(f"training job (vision): read {sum(n for _, n, _ in rows)} records from {len(rows)} shards in "
              f"{len(pids)} DataLoader worker process(es) {pids} (parent {os.getpid()})")
    story.say("the parent fetched the key once (one UnwrapKey); the forked workers inherited its lease and asked nobody")
    return len(rows) == 8 and sum(n for _, n, _ in rows) == 8 * RECORDS


def _refused(story, work: Path, inference: Any, speech: Any) -> bool:  # type: ignore[no-untyped-def]
    from ztid.crypto.dataset import SealedDataset
    from ztid.errors import KeyReleaseError

    ok, rows = True, []
    for label, c, want in (("inference server (vision)", inference, "explicit_deny"), ("training job (speech)", speech, "tenant_mismatch")):
        try:
            SealedDataset(work / "sealed", key_client=c).acquire()
            rows.append((label, "KEY RELEASED (bug!)", ""))
            ok = False
        except KeyReleaseError as exc:
            code = getattr(exc, "reason_code", "")
            ok &= code == want
            rows.append((label, f"refused: {code}", str(exc).split(": ", 3)[-1].split(" (decision ")[0]))
    story.table(["loader", "key service", "policy's reason"], rows)
    return ok


def _revoke(story, work: Path, training: Any, watcher: Any, policy_path: Path) -> bool:  # type: ignore[no-untyped-def]
    from ztid.crypto.dataset import SealedDataset
    from ztid.errors import KeyReleaseError

    ds = SealedDataset(work / "sealed", key_client=training)
    f = ds.open("shard-00.bin")
    f.read(64)
    text = policy_path.read_text()
    edited = text.replace("      data-store: [read]                   # read training data; never write it back\n", "", 1)
    if edited == text:
        story.say("(the policy copy has no training -> data-store read line to revoke; skipped)")
        return False
    policy_path.write_text(edited)
    watcher.reload()
    revoked_at = time.monotonic()
    story.say(f"revoked training's read of data-store in {policy_path.name} (reloaded); the loader keeps its lease "
              f"({f.lease.remaining():.1f}s left) ...")
    reads = 0
    try:
        while True:
            f.seek(0)
            f.read(4096)
            reads += 1
            time.sleep(0.1)
    except KeyReleaseError as exc:
        stopped = time.monotonic() - revoked_at
        story.say(f"... {reads} more reads, then at lease end the renewal was refused after {stopped:.1f}s "
                  f"(lease {LEASE.seconds}s): {getattr(exc, 'reason_code', '')}")
        return getattr(exc, "reason_code", "") == "no_matching_rule" and stopped <= LEASE.total_seconds() + 2


def _log_table(story, work: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    lines = [json.loads(x) for x in (work / "decisions.log").read_text().splitlines()]
    rows = [(x["extra"]["method"], x.get("peer") or "-", "allow" if x["allowed"] else "deny", x["reason_code"])
            for x in lines if x.get("kind") == "decision"]
    story.say("every answer is a decision in the tamper-evident log:")
    story.table(["method", "caller", "decision", "code"], rows)
