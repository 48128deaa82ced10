"""The tamper-evident decision log: every decision, one chained JSON line, written before the answer.

Usage at an enforcement point::

    log = DecisionLog("decisions.log", signer=my_svid)        # or signer=lambda: source.svid()
    decision = policy.decide(peer, "registry", "write")
    decision_id = log.record(decision, extra={"path": "/v1/models"})   # returns after write(2)
    ... answer, carrying decision_id ...

The byte format (canonical JSON, SHA-256 chain, signed checkpoints) is in
:mod:`ztid.audit.log_format`; checkpoint signing and the background fsync in
:mod:`ztid.audit.log_checkpoint`; verification in :mod:`ztid.audit.log_verify`; all are described in
``docs/decision-log.md``. One process writes one file: an exclusive ``flock`` refuses a second writer.
A write that fails raises :class:`ztid.AuditError` and the log refuses every later record, so the
enforcement point fails closed rather than answering without a record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json.encoder
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ztid.audit.ids import new_decision_id
from ztid.audit.log_checkpoint import SyncThread, signed_checkpoint, write_side
from ztid.audit.log_format import FORMAT_VERSION, GENESIS, MAX_LINE_BYTES, canonical, rfc3339
from ztid.errors import AuditError, UsageError

__all__ = ["DecisionLog", "extra_json", "new_decision_id"]

_log = logging.getLogger("ztid.audit")

_FSYNC_POLICIES: Final = ("always", "checkpoint", "never")
_TAIL_BYTES: Final = 4 * 1024 * 1024
_sha256: Final = hashlib.sha256  # the chain hash; log_format.line_hash is the same function for readers


_quote: Final = json.encoder.encode_basestring_ascii  # exactly what canonical() (ensure_ascii) writes for a str


def extra_json(extra: Mapping[str, Any]) -> bytes:
    """``"extra":{...},``: the canonical encoding of a line's ``extra`` fields, for :meth:`DecisionLog.record_prepared`.

    Raises:
        AuditError: a value JSON cannot represent.
    """
    if all(type(k) is str and type(v) is str for k, v in extra.items()):
        body = ",".join(f"{_quote(k)}:{_quote(extra[k])}" for k in sorted(extra))
        return b'"extra":{' + body.encode() + b"},"
    return b'"extra":' + canonical(dict(extra)) + b","


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class DecisionLog:
    """An append-only, hash-chained, periodically signed log of authorization decisions.

    Args:
        path: the log file; created (mode 0600) with a header line if absent or empty, otherwise
            its tail is verified and appending resumes after it.
        signer: the writer's own X509-SVID (``ztid.svid.X509Svid``), or a callable returning the
            current one (SVIDs rotate); None writes no checkpoints (chain only).
        checkpoint_every: write a signed checkpoint after this many decision lines (and on close).
        fsync: ``"always"`` (fsync every line, on the request path), ``"checkpoint"`` (a background
            thread fsyncs right after each checkpoint; close fsyncs before it returns; every line still
            reaches the kernel before :meth:`record` returns) or ``"never"``.
        checkpoint_file: where to also keep the latest checkpoint line (atomically replaced), so
            truncation of the log's end can be detected; default ``<path>.checkpoint``; False: none.

    Raises:
        UsageError: a meaningless option.
        AuditError: the file cannot be opened, is locked by another writer, or its tail does not
            verify (it is never "repaired").
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        signer: Any = None,
        checkpoint_every: int = 1000,
        fsync: str = "checkpoint",
        checkpoint_file: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        if fsync not in _FSYNC_POLICIES:
            raise UsageError(f"fsync must be one of {', '.join(_FSYNC_POLICIES)}, not {fsync!r}")
        if not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1:
            raise UsageError(f"checkpoint_every must be a positive int, not {checkpoint_every!r}")
        self.path = os.fspath(path)
        self._signer: Callable[[], Any] | None = signer if callable(signer) or signer is None else (lambda: signer)
        self._every = checkpoint_every
        self._fsync = fsync
        if checkpoint_file is False:
            self._side: str | None = None
        elif checkpoint_file is None or checkpoint_file is True:
            self._side = self.path + ".checkpoint"
        else:
            self._side = os.fspath(checkpoint_file)
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._since_checkpoint = 0
        self._frag_cache: dict[tuple[int, str | None], tuple[Any, Any]] = {}
        self._sec, self._sec_text = -1, b""
        self._syncer: SyncThread | None = None
        self.checkpoint_error: Exception | None = None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open decision log {self.path!r}: {exc.strerror or exc}") from exc
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise AuditError(f"decision log {self.path!r} is locked by another writer") from exc
            if os.fstat(self._fd).st_size == 0:
                self._seq, self._prev_hex = 0, GENESIS.encode()
                self.log_id = secrets.token_hex(16)
                header = {"kind": "header", "v": FORMAT_VERSION, "log_id": self.log_id}
                self._write(header, now=datetime.now(UTC))
                self._sync()
            else:
                self._resume()
        except BaseException:
            os.close(self._fd)
            raise

    # ------------------------------------------------------------------ public API
    @property
    def next_seq(self) -> int:
        """The ``seq`` (0-based line index) the next line will get."""
        return self._seq

    @property
    def head(self) -> str:
        """SHA-256 hex of the last line written (the next line's ``prev``)."""
        return self._prev_hex.decode()

    def record(self, decision: Any, *, peer: Any = None, extra: Mapping[str, Any] | None = None) -> str:
        """Append one decision and return its decision id, after the line reached the kernel.

        Args:
            decision: a :class:`ztid.policy.Decision` (fields allowed, reason, code, rule,
                policy_digest, mode, would_deny, source, target, action).
            peer: the peer as presented when the decision has no parsed source (e.g. a principal
                that is not a SPIFFE ID); stringified. Ignored when the decision has a source.
            extra: more JSON-serialisable fields for this line (e.g. method, path); kept under ``extra``.

        Returns:
            The decision id (32 hex digits).

        Raises:
            AuditError: the line could not be written (the log is then unusable: fail closed).
        """
        return self.record_prepared(self.prepare(decision, peer), extra_json(extra) if extra else b"")

    def prepare(self, decision: Any, peer: Any = None) -> tuple[bytes, ...]:
        """The parts of ``decision``'s line that do not change per request, for :meth:`record_prepared`.

        An enforcement point that sees the same decision many times (the sidecar) prepares it once.
        """
        return self._fragments(decision, peer)

    def record_prepared(self, prepared: tuple[bytes, ...], extra: bytes = b"") -> str:
        """:meth:`record` for a :meth:`prepare`-d decision; ``extra`` from :func:`extra_json` (or empty).

        Raises:
            AuditError: the line could not be written (the log is then unusable: fail closed).
        """
        decision_id = new_decision_id()
        before_id, before_prev, before_seq, before_time, end = prepared
        with self._lock:
            if self._broken is not None:
                raise AuditError(f"decision log {self.path!r} is unusable ({self._broken})")
            now = time.time()  # under the lock: line times never go backwards
            sec = int(now)
            if sec != self._sec:
                self._sec, self._sec_text = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
            # Keys in sorted order, exactly as canonical() would write the whole object (a test pins it):
            # action allowed component | decision_id extra | kind mode peer policy_digest | prev |
            # reason reason_code rule | seq | target tenant | time | would_deny; then the newline.
            line = b"".join((before_id, decision_id.encode(), b'",', extra, before_prev, self._prev_hex, before_seq,
                             b"%d" % self._seq, before_time, b"%s.%06dZ" % (self._sec_text, (now - sec) * 1e6), end))
            self._append(line)
            self._since_checkpoint += 1
            if self._fsync == "always":
                self._sync()
            if self._signer is not None and self._since_checkpoint >= self._every:
                self._try_checkpoint("interval")
        return decision_id

    def _fragments(self, decision: Any, peer: Any) -> tuple[bytes, ...]:
        """The canonical JSON pieces of a decision line that do not change per request (cached per decision).

        Five pieces, to be joined around the decision id, extra, prev, seq and time (see :meth:`record_prepared`).
        """
        key = (id(decision), None if peer is None else str(peer))
        hit = self._frag_cache.get(key)
        if hit is not None and hit[0] is decision:
            return hit[1]
        source = getattr(decision, "source", None)
        spiffe_id = getattr(source, "spiffe_id", None)

        def enc(value: Any) -> bytes:
            return canonical({"": value})[4:-1]  # the canonical encoding of one value

        def pairs(**kv: Any) -> bytes:
            return b"".join(b'"' + k.encode() + b'":' + enc(v) + b"," for k, v in kv.items())

        pieces = (
            b"{" + pairs(action=_text(getattr(decision, "action", None)), allowed=bool(getattr(decision, "allowed", False)),
                         component=_text(getattr(source, "component", None))) + b'"decision_id":"',
            pairs(kind="decision", mode=_text(getattr(decision, "mode", None)) or "enforce",
                  peer=_text(spiffe_id if spiffe_id is not None else peer),
                  policy_digest=_text(getattr(decision, "policy_digest", None)) or "") + b'"prev":"',
            b'",' + pairs(reason=_text(getattr(decision, "reason", None)) or "",
                          reason_code=_text(getattr(decision, "code", None)) or "unknown",
                          rule=_text(getattr(decision, "rule", None))) + b'"seq":',
            b"," + pairs(target=_text(getattr(decision, "target", None)), tenant=_text(getattr(source, "tenant", None)))
            + b'"time":"',
            b'",' + b'"would_deny":' + enc(bool(getattr(decision, "would_deny", False))) + b"}\n",
        )
        if len(self._frag_cache) >= 1024:
            self._frag_cache.clear()
        self._frag_cache[key] = (decision, pieces)  # holding decision keeps id() unique
        return pieces

    append = record  # the name in the internal contract

    def checkpoint(self) -> None:
        """Write a signed checkpoint now (no-op without a signer).

        Raises:
            AuditError: signing or writing failed.
        """
        with self._lock:
            if self._signer is not None:
                self._checkpoint("manual")

    def close(self) -> None:
        """Write a final signed checkpoint (when there is a signer and something new), fsync, release."""
        with self._lock:
            if self._fd < 0:
                return
            if self._syncer is not None:
                self._syncer.stop()
                self._syncer = None
            try:
                if self._signer is not None and self._since_checkpoint and self._broken is None:
                    self._try_checkpoint("close")
                if self._broken is None:
                    self._sync()
            finally:
                os.close(self._fd)
                self._fd = -1
                self._broken = self._broken or "closed"

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals (lock held)
    def _write(self, fields: dict[str, Any], *, now: datetime) -> bytes:
        return self._emit(dict(fields, seq=self._seq, prev=self.head, time=rfc3339(now)))

    def _emit(self, record: dict[str, Any]) -> bytes:
        return self._emit_line(canonical(record))

    def _emit_line(self, line: bytes) -> bytes:
        if self._broken is not None:
            raise AuditError(f"decision log {self.path!r} is unusable ({self._broken})")
        self._append(line + b"\n")
        return line

    def _append(self, data: bytes) -> None:
        """Write one newline-terminated line and chain it: ``prev`` becomes SHA-256 of it without the newline."""
        if len(data) > MAX_LINE_BYTES + 1:
            raise AuditError(f"decision log line of {len(data) - 1} bytes exceeds {MAX_LINE_BYTES}")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (rare: signals, full disk): finish it or fail
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._broken = f"write failed: {exc.strerror or exc}"
            raise AuditError(f"cannot write decision log {self.path!r}: {exc.strerror or exc}") from exc
        self._seq += 1
        self._prev_hex = _sha256(data[:-1]).hexdigest().encode()

    def _sync(self) -> None:
        if self._fsync == "never":
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = f"fsync failed: {exc.strerror or exc}"
            raise AuditError(f"cannot fsync decision log {self.path!r}: {exc.strerror or exc}") from exc

    def _try_checkpoint(self, trigger: str) -> None:
        try:
            self._checkpoint(trigger)
            self.checkpoint_error = None
        except AuditError as exc:
            if self._broken is not None:
                raise
            # The decision line is written and chained; only the signature is late. Retry next time.
            self.checkpoint_error = exc
            _log.warning("decision log checkpoint failed (will retry): %s", exc)

    def _checkpoint(self, trigger: str) -> None:
        assert self._signer is not None
        record = signed_checkpoint(self._signer, log_id=self.log_id, seq=self._seq, prev=self.head, trigger=trigger)
        line = self._emit(record)
        self._since_checkpoint = 0
        if self._fsync == "checkpoint" and trigger != "close":
            self._hand_off(line)  # fsync (tens of ms on some disks) and the side file, off the request path
        else:
            self._sync()
            if self._side is not None:
                write_side(self._side, line, fsync=self._fsync != "never")

    def _hand_off(self, line: bytes) -> None:
        if self._syncer is None:
            self._syncer = SyncThread(self._fd, self._side, self._fail_closed)
        self._syncer.hand_off(line)

    def _fail_closed(self, why: str) -> None:
        """Called by the sync thread when an fsync or side-file write failed: refuse every later record."""
        self._broken = why

    def _resume(self) -> None:
        from ztid.audit.log_verify import read_tail  # local: the verifier imports this module's peers

        state = read_tail(self.path, window=_TAIL_BYTES)
        self.log_id, self._seq, self._prev_hex = state.log_id, state.next_seq, state.head.encode()
        self._since_checkpoint = state.since_checkpoint


