"""PolicyWatcher: hot reload of a policy file; atomic swap, keeps the last good policy, says why.

A poll compares the file's (mtime, size) first and reads the bytes only when they changed; a new
policy is built only when the bytes' sha256 differs from the current digest, so touching the file
or rewriting identical bytes changes nothing. A broken edit leaves the current policy in place and
is reported through ``last_error``, the ``on_error`` callback and a warning log line.

Signals: :meth:`reload` does the work synchronously; from a SIGHUP handler prefer
:meth:`request_reload`, which only sets a flag that the polling thread (or the next ``current``
read when not polling) acts on, so a handler never blocks on the watcher's lock::

    signal.signal(signal.SIGHUP, lambda *_: watcher.request_reload())
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable

from ztid.errors import PolicyError
from ztid.policy.engine import Policy
from ztid.policy.load import load_policy, parse_policy

__all__ = ["PolicyWatcher"]

log = logging.getLogger("ztid.policy")


class PolicyWatcher:
    """Holds the current :class:`Policy` for ``path`` and swaps in good edits.

    Args:
        path: the policy file.
        on_change: called as ``on_change(old, new)`` after a new policy was swapped in.
        on_error: called as ``on_error(error)`` when a reload failed (the old policy stays).

    Raises:
        PolicyError: the file is unreadable or invalid at construction (there is no last good yet).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_change: Callable[[Policy, Policy], None] | None = None,
        on_error: Callable[[PolicyError], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._on_change = on_change
        self._on_error = on_error
        self._lock = threading.Lock()
        self._stat = self._stat_key()
        self._current: Policy = load_policy(self.path)
        self.last_error: PolicyError | None = None
        self._requested = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Policy:
        """The policy in force (the last good one). Reading it is one attribute load."""
        if self._requested.is_set() and self._thread is None:
            self._requested.clear()
            self.reload()
        return self._current

    def _stat_key(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def poll(self) -> bool:
        """Reload if the file's mtime or size changed. Returns whether a new policy is in force."""
        if self._stat_key() == self._stat:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Read the file now; swap in the new policy if its bytes changed and it is valid.

        Returns:
            True when a new policy is now in force; False when nothing changed or the edit was
            rejected (then ``last_error`` says why and the last good policy stays).
        """
        with self._lock:
            stat = self._stat_key()
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                return self._failed(PolicyError(f"cannot read policy file: {exc.strerror or exc}", location=self.path))
            self._stat = stat
            old = self._current
            if hashlib.sha256(data).hexdigest() == old.digest:
                self.last_error = None
                return False
            try:
                new = parse_policy(data, name=self.path, path=self.path)
            except PolicyError as exc:
                return self._failed(exc)
            self._current = new  # one reference assignment: readers see old or new, never a mix
            self.last_error = None
        log.info("policy %s reloaded: sha256 %s -> %s", self.path, old.digest[:12], new.digest[:12])
        if self._on_change is not None:
            try:
                self._on_change(old, new)
            except Exception:  # noqa: BLE001 - a callback bug must not undo a good reload
                log.exception("policy on_change callback failed")
        return True

    def _failed(self, exc: PolicyError) -> bool:
        self.last_error = exc
        log.warning("policy %s not reloaded, keeping sha256 %s: %s", self.path, self._current.digest[:12], exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # noqa: BLE001
                log.exception("policy on_error callback failed")
        return False

    def request_reload(self) -> None:
        """Ask for a reload soon; safe inside a signal handler (sets a flag, takes no lock)."""
        self._requested.set()

    def start(self, interval: float = 1.0) -> "PolicyWatcher":
        """Poll every ``interval`` seconds in a daemon thread (and act on :meth:`request_reload`)."""
        if self._thread is not None:
            return self
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                self._requested.wait(interval)
                if self._stop.is_set():
                    break
                try:
                    if self._requested.is_set():
                        self._requested.clear()
                        self.reload()
                    else:
                        self.poll()
                except Exception:  # noqa: BLE001 - the watcher thread must survive anything
                    log.exception("policy watcher poll failed")

        self._thread = threading.Thread(target=run, name=f"ztid-policy-watch:{self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (idempotent)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._requested.set()
        if thread is not None:
            thread.join(timeout=5)
        self._requested.clear()

    def __enter__(self) -> "PolicyWatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
