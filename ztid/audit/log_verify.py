"""Verify a decision log: the chain, the numbering, the checkpoint signatures; name the first bad line.

Tampering kinds reported (``LogVerification.kind``):

* ``edit``: a line's bytes changed (or it is not canonical JSON of a log record);
* ``deletion``: lines are missing (numbering jumps, the chain points at bytes that are nowhere);
* ``insertion``: a line the chain skips over (numbering repeats or the next line links past it);
* ``reorder``: lines present but out of order (a line's predecessor appears later in the file);
* ``truncation``: the file ends inside a line, is empty, or is shorter than a trusted checkpoint;
* ``bad_signature``: a checkpoint whose signature does not verify with its embedded leaf;
* ``unknown_signer``: a checkpoint whose chain does not verify against the bundle of its signer's
  own trust domain, or whose signer is not the expected one.

A tamperer who recomputes the chain after an edit is caught at the next signed checkpoint (its
``prev`` or signature no longer matches), which is then the line reported; lines after the last
checkpoint are protected against truncation only by a trusted copy of a later checkpoint
(``checkpoint=``, by default ``<log>.checkpoint`` when present).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Final

from cryptography import x509

from ztid.audit.log_format import GENESIS, canonical, line_hash, parse_time, signed_bytes, verify_payload
from ztid.errors import AuditError, ZtidError

__all__ = ["KINDS", "LogVerification", "read_tail", "verify_log"]

KINDS: Final = ("edit", "deletion", "insertion", "reorder", "truncation", "bad_signature", "unknown_signer")
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")
_HEX32: Final = re.compile(r"[0-9a-f]{32}\Z")
_RECORD_KINDS: Final = frozenset({"header", "decision", "checkpoint"})


@dataclass(frozen=True, slots=True)
class LogVerification:
    """The outcome of :func:`verify_log`.

    Attributes:
        ok: no tampering found.
        path: the log verified.
        lines: complete lines read.
        decisions: decision lines among them (up to the first bad line).
        checkpoints: checkpoints whose signature and signer verified.
        signed_lines: lines covered by the last verified checkpoint (it included).
        unsigned_tail: lines after it (chained, not yet signed).
        signers: distinct SPIFFE IDs that signed verified checkpoints.
        log_id: the header's log id, if readable.
        first_bad_line: 1-based number of the first bad line, or None.
        kind: one of :data:`KINDS`, or None.
        detail: a one-line human explanation.
    """

    ok: bool
    path: str
    lines: int
    decisions: int
    checkpoints: int
    signed_lines: int
    unsigned_tail: int
    signers: tuple[str, ...]
    log_id: str | None
    first_bad_line: int | None = None
    kind: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = asdict(self)
        out["signers"] = list(self.signers)
        return out


class _Bad(Exception):
    def __init__(self, index: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.index, self.kind, self.detail = index, kind, detail


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record if ``line`` is the canonical JSON of a well-formed record, else None."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    seq, prev = obj.get("seq"), obj.get("prev")
    if obj.get("kind") not in _RECORD_KINDS or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    if not isinstance(prev, str) or not _HEX64.match(prev) or not isinstance(obj.get("time"), str):
        return None
    try:
        if canonical(obj) != line:
            return None
    except AuditError:
        return None
    return obj


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise AuditError(f"cannot read decision log {path!r}: {exc.strerror or exc}") from exc


def verify_log(
    path: str | os.PathLike[str],
    bundles: Any,
    *,
    expect_signer: Any = None,
    checkpoint: str | os.PathLike[str] | bytes | None = None,
) -> LogVerification:
    """Verify the decision log at ``path``.

    Args:
        path: the log file.
        bundles: a ``ztid.BundleSet`` (or one ``Bundle``); each checkpoint's chain is verified
            against the bundle of its signer's own trust domain only.
        expect_signer: if given (SpiffeId or str), every checkpoint must be signed by this ID.
        checkpoint: a trusted checkpoint line (bytes) or a file holding one; the log must contain it
            at its ``seq``. Default: ``<path>.checkpoint`` when that file exists.

    Returns:
        A :class:`LogVerification`; ``ok`` False names the first bad line and the kind.

    Raises:
        AuditError: the log (or the checkpoint file) cannot be read.
    """
    path = os.fspath(path)
    data = _read(path)
    trusted: bytes | None
    if isinstance(checkpoint, bytes):
        trusted = checkpoint
    elif checkpoint is not None:
        trusted = _read(os.fspath(checkpoint))
    elif os.path.exists(path + ".checkpoint"):
        trusted = _read(path + ".checkpoint")
    else:
        trusted = None
    return _Verifier(path, data, bundles, None if expect_signer is None else str(expect_signer)).run(trusted)


class _Verifier:
    def __init__(self, path: str, data: bytes, bundles: Any, expect: str | None) -> None:
        self.path, self.bundles, self.expect = path, bundles, expect
        parts = data.split(b"\n")
        self.partial = parts.pop() if parts else b""  # b"" when the file ends with a newline
        self.lines = parts
        self.hashes = [line_hash(line) for line in parts]
        self.recs = [_parse(line) for line in parts]
        self.index: dict[str, int] = {}
        for i, h in enumerate(self.hashes):
            self.index.setdefault(h, i)
        self.log_id: str | None = None
        self.decisions = self.checkpoints = 0
        self.last_signed = -1
        self.signers: list[str] = []

    def result(self, bad: _Bad | None = None) -> LogVerification:
        signed = self.last_signed + 1
        return LogVerification(
            ok=bad is None, path=self.path, lines=len(self.lines), decisions=self.decisions,
            checkpoints=self.checkpoints, signed_lines=signed, unsigned_tail=len(self.lines) - signed,
            signers=tuple(self.signers), log_id=self.log_id,
            first_bad_line=None if bad is None else bad.index + 1, kind=None if bad is None else bad.kind,
            detail="" if bad is None else bad.detail,
        )

    def run(self, trusted: bytes | None) -> LogVerification:
        try:
            if not self.lines and not self.partial:
                raise _Bad(0, "truncation", "empty log: no header line")
            for i in range(len(self.lines)):
                self.check(i)
            if self.partial:
                raise _Bad(len(self.lines), "truncation", "the file ends inside a line (no final newline)")
            if trusted is not None:
                self.check_trusted(trusted)
        except _Bad as bad:
            return self.result(bad)
        return self.result()

    # ------------------------------------------------------------------ per line
    def prev_of(self, i: int) -> str:
        return GENESIS if i == 0 else self.hashes[i - 1]

    def check(self, i: int) -> None:
        rec = self.recs[i]
        if rec is None:
            raise _Bad(i, "edit", "not a canonical JSON log record")
        if rec["prev"] != self.prev_of(i) or rec["seq"] != i:
            raise self.classify(i)
        kind = rec["kind"]
        if (i == 0) != (kind == "header"):
            raise _Bad(i, "edit", "the header must be line 1 and only line 1")
        if kind == "header":
            log_id = rec.get("log_id")
            if rec.get("v") != 1 or not isinstance(log_id, str) or not _HEX32.match(log_id):
                raise _Bad(i, "edit", "malformed header")
            self.log_id = log_id
        elif kind == "decision":
            self.decisions += 1
        else:
            self.check_checkpoint(i, rec)

    def classify(self, i: int) -> _Bad:
        rec = self.recs[i]
        assert rec is not None
        n, seq, prev = len(self.lines), rec["seq"], rec["prev"]
        nxt = self.recs[i + 1] if i + 1 < n else None
        if nxt is not None and nxt["prev"] == self.prev_of(i):  # the chain skips line i
            duplicate = self.index[self.hashes[i]] != i
            if not duplicate and any(r is not None and r["prev"] == self.hashes[i] for r in self.recs):
                return _Bad(i, "reorder", f"line {i + 1} belongs later in the chain")
            return _Bad(i, "insertion", f"line {i + 1} is not in the chain: the next line links past it")
        if prev == self.prev_of(i):  # linked, but numbered wrong
            if seq > i and (nxt is None or nxt["seq"] == seq + 1):
                return _Bad(i, "deletion", f"{seq - i} line(s) missing before line {i + 1} (its seq is {seq})")
            return _Bad(i, "edit", f"line {i + 1} has seq {seq}, expected {i}")
        q = self.index.get(prev)
        if q is not None and q > i - 1:
            return _Bad(i, "reorder", f"line {i + 1} follows line {q + 1} in the chain but comes before it")
        if q is not None:  # the chain skips lines q+1 .. i-1
            later = {r["prev"] for r in self.recs[i + 1:] if r is not None}
            skipped = range(q + 1, i)
            if any(self.hashes[j] in later for j in skipped):
                return _Bad(q + 1, "reorder", f"line {q + 1 + 1} belongs later in the chain")
            return _Bad(q + 1, "insertion", f"line(s) {q + 2}..{i} are not in the chain (line {i + 1} links to line {q + 1})")
        # The predecessor's original bytes are nowhere in the file: edited or deleted.
        if seq > i:
            return _Bad(i, "deletion", f"{seq - i} line(s) missing before line {i + 1} (its seq is {seq})")
        if i == 0 or (nxt is not None and nxt["prev"] != self.hashes[i]):
            return _Bad(i, "edit", f"line {i + 1} was altered (its chain hash matches no line)")
        return _Bad(i - 1, "edit", f"line {i} was altered (line {i + 1} carries a different hash for it)")

    def check_checkpoint(self, i: int, rec: dict[str, Any]) -> None:
        signer, alg, chain, sig = rec.get("signer"), rec.get("alg"), rec.get("chain"), rec.get("sig")
        if not all(isinstance(v, str) for v in (signer, alg, chain, sig)):
            raise _Bad(i, "edit", "malformed checkpoint")
        if rec.get("entries") != rec["seq"] or rec.get("log_id") != self.log_id:
            raise _Bad(i, "edit", "checkpoint does not describe this log")
        self.verify_signature(i, rec)
        self.checkpoints += 1
        self.last_signed = i
        if signer not in self.signers:
            self.signers.append(signer)

    def verify_signature(self, i: int, rec: dict[str, Any]) -> None:
        try:
            chain = x509.load_pem_x509_certificates(rec["chain"].encode("ascii"))
            at = parse_time(rec["time"])
        except (ValueError, UnicodeEncodeError, AuditError) as exc:
            raise _Bad(i, "bad_signature", f"checkpoint chain or time unreadable: {exc}") from None
        if not verify_payload(chain[0].public_key(), rec["alg"], rec["sig"], signed_bytes(rec)):
            raise _Bad(i, "bad_signature", "checkpoint signature does not verify")
        if self.expect is not None and rec["signer"] != self.expect:
            raise _Bad(i, "unknown_signer", f"checkpoint signed by {rec['signer']!r}, expected {self.expect!r}")
        from ztid.svid import verify_x509_svid  # the spine; imported late so the writer never needs it

        try:
            verified = verify_x509_svid(chain, self.bundles, at=at)
        except ZtidError as exc:
            raise _Bad(i, "unknown_signer", f"checkpoint signer {rec['signer']!r} not trusted: {exc}") from None
        if str(verified.spiffe_id) != rec["signer"]:
            raise _Bad(i, "unknown_signer", f"checkpoint names {rec['signer']!r} but its SVID is {verified.spiffe_id}")

    def check_trusted(self, trusted: bytes) -> None:
        line = trusted.rstrip(b"\n")
        rec = _parse(line)
        if rec is None or rec["kind"] != "checkpoint":
            raise AuditError("the trusted checkpoint is not a checkpoint line")
        c = rec["seq"]
        if c >= len(self.lines):
            raise _Bad(len(self.lines), "truncation",
                       f"log has {len(self.lines)} lines but a signed checkpoint covers {c + 1}")
        if self.lines[c] != line:
            self.verify_signature(c, rec)  # a forged trusted checkpoint is reported as such
            raise _Bad(c, "edit", f"line {c + 1} differs from the trusted checkpoint for it")


@dataclass(frozen=True, slots=True)
class TailState:
    """Where a resumed writer continues: the log id, the next seq, the chain head."""

    log_id: str
    next_seq: int
    head: str
    since_checkpoint: int


def read_tail(path: str, *, window: int) -> TailState:
    """Check the header and the last ``window`` bytes of a log a writer is about to resume.

    Raises:
        AuditError: the header or the tail does not verify (the log is never repaired in place).
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - window)
            f.seek(start)
            data = f.read()
    except OSError as exc:
        raise AuditError(f"cannot read decision log {path!r}: {exc.strerror or exc}") from exc
    header = _parse(first.rstrip(b"\n")) if first.endswith(b"\n") else None
    if header is None or header["kind"] != "header" or header["seq"] != 0 or header["prev"] != GENESIS:
        raise AuditError(f"cannot resume decision log {path!r}: line 1 is not a valid header")
    if not data.endswith(b"\n"):
        raise AuditError(f"cannot resume decision log {path!r}: it ends inside a line; verify it and start a new log")
    lines = data.split(b"\n")[:-1]
    if start > 0:
        lines = lines[1:]  # the window may begin mid-line
    if not lines:
        raise AuditError(f"cannot resume decision log {path!r}: no complete line in its last {window} bytes")
    prev_hash: str | None = None
    prev_seq: int | None = None
    since = 0
    for line in lines:
        rec = _parse(line)
        bad = rec is None or (prev_hash is not None and (rec["prev"] != prev_hash or rec["seq"] != prev_seq + 1))
        if bad:
            where = "?" if rec is None else rec["seq"] + 1
            raise AuditError(f"cannot resume decision log {path!r}: its tail does not verify near line {where}; "
                             "run `ztid audit verify-log`")
        assert rec is not None
        since = 0 if rec["kind"] == "checkpoint" else since + (rec["kind"] == "decision")
        prev_hash, prev_seq = line_hash(line), rec["seq"]
    assert prev_hash is not None and prev_seq is not None
    return TailState(log_id=header["log_id"], next_seq=prev_seq + 1, head=prev_hash, since_checkpoint=since)
