"""The decision log: format, chain, checkpoints, and the verifier against every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ztid.audit.decisions import DecisionLog
from ztid.audit.log_format import GENESIS, canonical, sign_payload, signed_bytes
from ztid.audit.log_verify import verify_log
from ztid.errors import AuditError, UsageError
from ztid.testing import TestCA, bundle_set

TD = "ai-platform.example"
SOURCES = ["training/job-7", "inference/web", "pipeline/nightly", "registry/main"]


def write_log(path: Path, policy: Any, signer: Any, n: int = 20, every: int = 5) -> list[bytes]:
    with DecisionLog(path, signer=signer, checkpoint_every=every) as log:
        for i in range(n):
            log.record(policy.decide(f"spiffe://{TD}/{SOURCES[i % 4]}", "registry", "write"), extra={"i": i})
    return path.read_bytes().splitlines()


def put(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def rewrite(line: bytes, **changes: Any) -> bytes:
    obj = json.loads(line)
    obj.update(changes)
    return canonical(obj)


def rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What a tamperer without the key can do: recompute every prev from ``start`` on."""
    out = list(lines)
    for i in range(max(start, 1), len(out)):
        out[i] = rewrite(out[i], prev=hashlib.sha256(out[i - 1]).hexdigest(), seq=i)
    return out


@pytest.fixture
def log_lines(tmp_path: Path, policy: Any, signer: Any) -> tuple[Path, list[bytes]]:
    path = tmp_path / "decisions.log"
    lines = write_log(path, policy, signer)
    os.remove(str(path) + ".checkpoint")  # each test opts into the trusted copy explicitly
    return path, lines


def kinds(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


# ---------------------------------------------------------------- format and clean logs

def test_clean_log_verifies_with_counts(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    # header, 20 decisions, a checkpoint after each 5: the 4th is the interval one; close adds none.
    assert kinds(lines).count("checkpoint") == 4 and kinds(lines)[0] == "header"
    r = verify_log(path, bundles, expect_signer=f"spiffe://{TD}/ztid/sidecar")
    assert r.ok, r.detail
    assert (r.lines, r.decisions, r.checkpoints, r.unsigned_tail) == (25, 20, 4, 0)
    assert r.signers == (f"spiffe://{TD}/ztid/sidecar",)


def test_lines_are_canonical_and_chained_from_genesis(log_lines: tuple[Path, list[bytes]]) -> None:
    _, lines = log_lines
    prev = GENESIS
    for i, line in enumerate(lines):
        obj = json.loads(line)
        assert canonical(obj) == line
        assert obj["seq"] == i and obj["prev"] == prev
        prev = hashlib.sha256(line).hexdigest()


def test_decision_line_fields(log_lines: tuple[Path, list[bytes]]) -> None:
    _, lines = log_lines
    allowed = json.loads(lines[1])  # training may write registry
    denied = json.loads(lines[2])   # inference may not
    assert allowed["allowed"] is True and allowed["reason_code"] == "allowed"
    assert allowed["rule"] == "components.training.allow.registry" and allowed["component"] == "training"
    assert denied["allowed"] is False and denied["reason_code"] in ("explicit_deny", "no_matching_rule")
    for key in ("time", "decision_id", "peer", "tenant", "target", "action", "policy_digest", "mode", "would_deny"):
        assert key in allowed
    assert len(allowed["decision_id"]) == 32 and allowed["time"].endswith("Z")
    assert allowed["extra"] == {"i": 0}


def test_no_signer_writes_no_checkpoints_but_chain_verifies(tmp_path: Path, policy: Any, bundles: Any) -> None:
    path = tmp_path / "d.log"
    lines = write_log(path, policy, None, n=3)
    assert kinds(lines) == ["header", "decision", "decision", "decision"]
    r = verify_log(path, bundles)
    assert r.ok and r.checkpoints == 0 and r.unsigned_tail == 4


# ---------------------------------------------------------------- each tampering kind

def test_edit_of_a_field_names_the_line(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    assert json.loads(lines[2])["allowed"] is False  # inference may not write the registry
    lines[2] = rewrite(lines[2], allowed=True, reason_code="allowed")
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.ok, r.kind, r.first_bad_line) == (False, "edit", 3)


def test_single_byte_flip_is_an_edit(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    lines[8] = lines[8].replace(b'"write"', b'"wrate"')
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("edit", 9)


def test_non_canonical_line_is_an_edit(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    lines[5] = json.dumps(json.loads(lines[5]), indent=1).replace("\n", "").encode()
    put(path, lines)
    assert (verify_log(path, bundles).kind, verify_log(path, bundles).first_bad_line) == ("edit", 6)


def test_deletion(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    del lines[4]
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("deletion", 5)


def test_deletion_of_the_header(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    put(path, lines[1:])
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("deletion", 1)


def test_insertion_with_a_correct_prev(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    forged = rewrite(lines[3], decision_id="f" * 32, prev=hashlib.sha256(lines[3]).hexdigest(), seq=4)
    lines.insert(4, forged)
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("insertion", 5)


def test_insertion_of_a_copied_line(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    lines.insert(7, lines[2])
    put(path, lines)
    r = verify_log(path, bundles)
    assert not r.ok and r.first_bad_line == 8 and r.kind in ("insertion", "reorder")


def test_reorder_of_two_lines(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    lines[2], lines[3] = lines[3], lines[2]
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("reorder", 3)


def test_line_moved_earlier_is_a_reorder(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    moved = lines.pop(9)
    lines.insert(4, moved)
    put(path, lines)
    r = verify_log(path, bundles)
    assert r.kind == "reorder" and r.first_bad_line == 5


def test_truncation_inside_a_line(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, _ = log_lines
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("truncation", r.lines + 1)


def test_empty_log_is_truncation(tmp_path: Path, bundles: Any) -> None:
    (tmp_path / "e.log").write_bytes(b"")
    assert verify_log(tmp_path / "e.log", bundles).kind == "truncation"


def test_truncation_against_the_trusted_checkpoint(tmp_path: Path, policy: Any, signer: Any, bundles: Any) -> None:
    path = tmp_path / "d.log"
    lines = write_log(path, policy, signer, n=12, every=5)
    assert verify_log(path, bundles).ok  # <log>.checkpoint is used by default
    put(path, lines[:-4])  # cut whole lines, including the final checkpoint
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("truncation", len(lines) - 3)
    # Without the trusted copy, a clean cut at a line boundary is indistinguishable from a live tail.
    assert verify_log(path, bundles, checkpoint=lines[kinds(lines).index("checkpoint")]).ok


def test_rechained_edit_is_caught_at_the_next_checkpoint(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    original = lines[2]
    lines[2] = rewrite(lines[2], allowed=True)
    assert lines[2] != original
    lines = rechain(lines, 3)
    put(path, lines)
    r = verify_log(path, bundles)
    first_checkpoint = kinds(lines).index("checkpoint") + 1
    assert (r.kind, r.first_bad_line) == ("bad_signature", first_checkpoint)


def test_trusted_checkpoint_catches_a_rewritten_history(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    trusted = lines[-1]
    lines = [line for line in lines if json.loads(line)["kind"] != "checkpoint"]
    put(path, rechain(lines, 1))  # checkpoints stripped, chain recomputed: internally consistent
    assert verify_log(path, bundles).ok
    r = verify_log(path, bundles, checkpoint=trusted)
    assert not r.ok and r.kind == "truncation"


# ---------------------------------------------------------------- checkpoint signatures and signers

def forge_checkpoint(lines: list[bytes], key: Any, chain_pem: str, signer_id: str) -> bytes:
    last = json.loads(lines[-1])
    header = json.loads(lines[0])
    record = {
        "kind": "checkpoint", "log_id": header["log_id"], "entries": len(lines), "trigger": "interval",
        "signer": signer_id, "alg": "ES256", "chain": chain_pem, "seq": len(lines),
        "prev": hashlib.sha256(lines[-1]).hexdigest(), "time": last["time"],
    }
    record["sig"] = sign_payload(key, signed_bytes(record))
    return canonical(record)


def test_checkpoint_signed_by_a_foreign_ca_claiming_our_trust_domain(
    log_lines: tuple[Path, list[bytes]], bundles: Any
) -> None:
    path, lines = log_lines
    rogue = TestCA.create(TD)  # same name, different keys
    svid = rogue.issue(f"spiffe://{TD}/ztid/sidecar")
    lines.append(forge_checkpoint(lines, svid.private_key, svid.chain_pem().decode(), str(svid.spiffe_id)))
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("unknown_signer", len(lines))


def test_checkpoint_with_a_signature_that_does_not_verify(
    log_lines: tuple[Path, list[bytes]], bundles: Any, signer: Any
) -> None:
    path, lines = log_lines
    other = TestCA.create(TD).issue(f"spiffe://{TD}/ztid/sidecar")
    # The real signer's chain, a different key: the signature cannot verify with the embedded leaf.
    lines.append(forge_checkpoint(lines, other.private_key, signer.chain_pem().decode(), str(signer.spiffe_id)))
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("bad_signature", len(lines))


def test_edited_checkpoint_field_breaks_its_signature(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    i = kinds(lines).index("checkpoint")
    lines[i] = rewrite(lines[i], trigger="manual")
    put(path, lines)
    r = verify_log(path, bundles)
    assert (r.kind, r.first_bad_line) == ("bad_signature", i + 1)


def test_checkpoint_from_another_trust_domain(tmp_path: Path, policy: Any, partner: TestCA, bundles: Any) -> None:
    path = tmp_path / "p.log"
    write_log(path, policy, partner.issue("spiffe://partner.example/ztid/sidecar"), n=6, every=3)
    r = verify_log(path, bundles)  # only ai-platform.example's bundle: partner's signature is not trusted
    assert r.kind == "unknown_signer" and r.first_bad_line == 5
    assert verify_log(path, bundle_set(partner)).ok


def test_unexpected_signer(log_lines: tuple[Path, list[bytes]], bundles: Any) -> None:
    path, lines = log_lines
    r = verify_log(path, bundles, expect_signer=f"spiffe://{TD}/someone/else")
    assert (r.kind, r.first_bad_line) == ("unknown_signer", kinds(lines).index("checkpoint") + 1)


def test_checkpoint_verifies_at_its_own_time_after_the_svid_expired(
    tmp_path: Path, policy: Any, ca: TestCA, bundles: Any
) -> None:
    minted = ca.mint(f"spiffe://{TD}/ztid/sidecar")
    from ztid.svid import X509Svid

    svid = X509Svid.parse(minted.chain_pem(), minted.key_pem())
    path = tmp_path / "d.log"
    write_log(path, policy, svid, n=4, every=2)
    assert verify_log(path, bundles).ok
    expired = ca.expired(f"spiffe://{TD}/ztid/sidecar")
    late = X509Svid.parse(expired.chain_pem(), expired.key_pem())
    write_log(tmp_path / "late.log", policy, late, n=2, every=2)
    assert verify_log(tmp_path / "late.log", bundles).kind == "unknown_signer"


# ---------------------------------------------------------------- writer behaviour

def test_concurrent_appends_keep_one_valid_chain(tmp_path: Path, policy: Any, signer: Any, bundles: Any) -> None:
    path = tmp_path / "c.log"
    decision = policy.decide(f"spiffe://{TD}/training/job-7", "registry", "read")
    ids: list[str] = []
    lock = threading.Lock()
    with DecisionLog(path, signer=signer, checkpoint_every=50, fsync="never") as log:
        def work() -> None:
            mine = [log.record(decision) for _ in range(150)]
            with lock:
                ids.extend(mine)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    r = verify_log(path, bundles)
    assert r.ok, r.detail
    assert r.decisions == 1200 and len(set(ids)) == 1200 and r.checkpoints == 24


def test_resume_continues_the_chain(tmp_path: Path, policy: Any, signer: Any, bundles: Any) -> None:
    path = tmp_path / "r.log"
    write_log(path, policy, signer, n=7, every=5)
    write_log(path, policy, signer, n=7, every=5)
    r = verify_log(path, bundles)
    assert r.ok and r.decisions == 14
    assert len({json.loads(line).get("log_id") for line in path.read_bytes().splitlines()} - {None}) == 1


def test_resume_refuses_a_tampered_tail(tmp_path: Path, policy: Any, signer: Any) -> None:
    path = tmp_path / "t.log"
    lines = write_log(path, policy, signer, n=4, every=10)
    lines[-2] = rewrite(lines[-2], allowed=True)
    put(path, lines)
    with pytest.raises(AuditError, match="tail does not verify"):
        DecisionLog(path, signer=signer)


def test_resume_refuses_a_partial_last_line(tmp_path: Path, policy: Any, signer: Any) -> None:
    path = tmp_path / "p.log"
    write_log(path, policy, signer, n=2)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(AuditError, match="ends inside a line"):
        DecisionLog(path, signer=signer)


def test_second_writer_is_refused(tmp_path: Path, signer: Any) -> None:
    path = tmp_path / "w.log"
    with DecisionLog(path, signer=signer):
        with pytest.raises(AuditError, match="locked by another writer"):
            DecisionLog(path, signer=signer)


def test_file_mode_is_private(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    DecisionLog(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_record_after_close_fails_closed(tmp_path: Path, policy: Any) -> None:
    log = DecisionLog(tmp_path / "x.log")
    log.close()
    with pytest.raises(AuditError):
        log.record(policy.decide(f"spiffe://{TD}/training/x", "registry", "read"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_a_failed_write_fails_closed_and_stays_closed(tmp_path: Path, policy: Any, bundles: Any) -> None:
    decision = policy.decide(f"spiffe://{TD}/training/x", "registry", "read")
    log = DecisionLog(tmp_path / "x.log")
    log.record(decision)
    head, seq = log.head, log.next_seq
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, log._fd)  # a real ENOSPC from write(2), not a mock
    finally:
        os.close(full)
    with pytest.raises(AuditError, match="cannot write decision log .*No space left on device"):
        log.record(decision)
    assert (log.head, log.next_seq) == (head, seq)  # the failed line is not in the chain
    with pytest.raises(AuditError, match="unusable"):
        log.record_prepared(log.prepare(decision))
    with pytest.raises(AuditError, match="unusable"):
        log.record(decision)
    log.close()
    assert verify_log(tmp_path / "x.log", bundles).ok  # what did reach the file still verifies


def test_unserialisable_extra_is_an_audit_error(tmp_path: Path, policy: Any) -> None:
    with DecisionLog(tmp_path / "x.log") as log:
        with pytest.raises(AuditError):
            log.record(policy.decide(f"spiffe://{TD}/training/x", "registry", "read"), extra={"x": object()})


def test_failing_signer_does_not_lose_decisions(tmp_path: Path, policy: Any, signer: Any, bundles: Any) -> None:
    calls = {"n": 0}

    def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("workload API unavailable")
        return signer

    path = tmp_path / "f.log"
    with DecisionLog(path, signer=flaky, checkpoint_every=2) as log:
        d = policy.decide(f"spiffe://{TD}/training/x", "registry", "read")
        log.record(d)
        log.record(d)  # checkpoint attempt fails: the decision stays written
        assert log.checkpoint_error is not None
        log.record(d)  # retried and signed
        assert log.checkpoint_error is None
    r = verify_log(path, bundles)
    assert r.ok and r.decisions == 3 and r.checkpoints >= 1


@pytest.mark.parametrize("kwargs", [{"fsync": "sometimes"}, {"checkpoint_every": 0}, {"checkpoint_every": True}])
def test_bad_options(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        DecisionLog(tmp_path / "o.log", **kwargs)


def test_unreadable_log_raises_audit_error(tmp_path: Path, bundles: Any) -> None:
    with pytest.raises(AuditError, match="cannot read"):
        verify_log(tmp_path / "missing.log", bundles)


# ---------------------------------------------------------------- the fast line writer is exactly canonical

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(peer=st.none() | st.text(max_size=40), extra=st.none() | st.dictionaries(st.text(max_size=10), _json_values,
                                                                                 max_size=4))
def test_decision_lines_are_canonical_for_any_peer_and_extra(
    tmp_path_factory: pytest.TempPathFactory, policy: Any, bundles: Any, peer: Any, extra: Any
) -> None:
    path = tmp_path_factory.mktemp("canon") / "d.log"
    denied = policy.decide("CN=not-spiffe", "registry", "write")  # no source: the peer text is logged
    allowed = policy.decide(f"spiffe://{TD}/training/x", "registry", "read")
    with DecisionLog(path) as log:
        log.record(denied, peer=peer, extra=extra)
        log.record(allowed, peer=peer, extra=extra)
        log.record(denied, peer=peer)
    lines = path.read_bytes().splitlines()
    for line in lines:
        assert canonical(json.loads(line)) == line
    first = json.loads(lines[1])
    assert first["peer"] == (None if peer is None else str(peer))
    assert first.get("extra") == (extra or None)
    assert verify_log(path, bundles).ok


def test_a_failed_background_sync_makes_later_records_fail_closed(tmp_path: Path, policy: Any, signer: Any) -> None:
    # The checkpoint side file cannot be written (its directory does not exist): the sync thread,
    # which fsyncs and writes it after each checkpoint, fails; from then on the log refuses records.
    log = DecisionLog(tmp_path / "d.log", signer=signer, checkpoint_every=2, fsync="checkpoint",
                      checkpoint_file=tmp_path / "missing-dir" / "d.checkpoint")
    decision = policy.decide("spiffe://ai-platform.example/training/job-7", "registry", "write")
    log.record(decision)
    log.record(decision)  # the checkpoint: handed to the sync thread
    deadline = time.monotonic() + 10
    with pytest.raises(AuditError, match="unusable"):
        while time.monotonic() < deadline:
            log.record(decision)
            time.sleep(0.01)
    log.close()
