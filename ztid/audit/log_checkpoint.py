"""Decision log checkpoints: sign the chain head with the writer's SVID, then fsync and keep the side file.

:func:`signed_checkpoint` builds one checkpoint record (the byte format is in
:mod:`ztid.audit.log_format`); :class:`SyncThread` fsyncs the log and replaces the checkpoint side
file after each checkpoint on a background thread, so the request path of
:class:`ztid.audit.decisions.DecisionLog` never waits for the disk; :func:`write_side` is that
side-file write, also used directly when there is no thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ztid.audit.log_format import alg_for, rfc3339, sign_payload, signed_bytes
from ztid.errors import AuditError

__all__ = ["SyncThread", "signed_checkpoint", "write_side"]

_log = logging.getLogger("ztid.audit")


def signed_checkpoint(signer: Callable[[], Any], *, log_id: str, seq: int, prev: str, trigger: str) -> dict[str, Any]:
    """The checkpoint record for a log whose next line is ``seq`` and whose head is ``prev``, signed.

    Raises:
        AuditError: the signer gave no usable SVID, or signing failed.
    """
    try:
        svid = signer()
        chain_pem = svid.chain_pem().decode("ascii")
        signer_id = str(svid.spiffe_id)
        key = svid.private_key
    except Exception as exc:  # a foreign source/SVID failure, translated once here
        raise AuditError(f"no signing SVID for the decision log checkpoint: {exc}") from exc
    record: dict[str, Any] = {
        "kind": "checkpoint",
        "log_id": log_id,
        "entries": seq,
        "trigger": trigger,
        "signer": signer_id,
        "alg": alg_for(key),
        "chain": chain_pem,
        "seq": seq,
        "prev": prev,
        "time": rfc3339(datetime.now(UTC)),
    }
    record["sig"] = sign_payload(key, signed_bytes(record))
    return record


def write_side(side: str, line: bytes, *, fsync: bool) -> None:
    """Atomically replace the checkpoint side file ``side`` with ``line``.

    Raises:
        AuditError: it cannot be written.
    """
    tmp = f"{side}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line + b"\n")
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, side)
    except OSError as exc:
        raise AuditError(f"cannot write checkpoint file {side!r}: {exc.strerror or exc}") from exc


class SyncThread:
    """A daemon thread that, after each handed-off checkpoint line, fsyncs the log ``fd`` and writes
    the side file (when ``side`` is set). A failure is passed to ``fail`` (the log then refuses
    every later record) and logged; the thread never dies silently.
    """

    def __init__(self, fd: int, side: str | None, fail: Callable[[str], None]) -> None:
        self._fd = fd
        self._side = side
        self._fail = fail
        self._wake = threading.Event()
        self._pending: bytes | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="ztid-decision-log-sync", daemon=True)
        self._thread.start()

    def hand_off(self, line: bytes) -> None:
        """Sync the log and write ``line`` to the side file soon (a newer line replaces an unsynced one)."""
        self._pending = line
        self._wake.set()

    def stop(self) -> None:
        """Finish a pending sync, then end the thread (returns when it has)."""
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            line, self._pending = self._pending, None
            if line is not None:
                try:
                    os.fsync(self._fd)
                    if self._side is not None:
                        write_side(self._side, line, fsync=True)
                except Exception as exc:  # noqa: BLE001 - whatever it was, this thread must not die silently
                    self._fail(f"fsync failed: {exc}")  # every later record() raises: fail closed
                    _log.error("decision log sync failed; refusing further records: %s", exc)
            if self._stop:
                return
