"""WorkloadApiSource: SVIDs and bundles streamed from a SPIFFE Workload API (SPIRE or ``ztid agent``).

Built on the ``spiffe`` package's :class:`spiffe.WorkloadApiClient` (endpoint handling, the
``workload.spiffe.io`` header, DER parsing into an ``X509Context``: one SVID list and bundle set
per response, so each snapshot is coherent). ``spiffe.X509Source`` itself is not used, because
it retries PERMISSION_DENIED silently while it keeps serving the last SVID; ztid must stop.

Error handling (Workload Endpoint §6, Workload API §4.4, §5.2.1):

* PERMISSION_DENIED, or a response with no SVID (redaction): **fail closed** at once —
  :meth:`WorkloadApiSource.snapshot` raises :class:`~ztid.errors.SourceError`, ``on_error``
  subscribers are told — then reconnect with backoff; serving resumes if an SVID is granted again.
* INVALID_ARGUMENT: fail closed, no retry (the request itself is wrong).
* UNAVAILABLE, a stream that ends, a malformed response: keep the last good snapshot while its
  SVID is valid (an SVID is not revoked by an agent restart), reconnect with backoff; once the
  SVID has expired, ``snapshot()`` raises.

Every response replaces the whole bundle set: a trust domain (own or federated) missing from a
response is dropped, and a CA missing from a bundle stops being trusted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from ztid.bundle import Bundle, BundleSet
from ztid.errors import SourceError, UsageError, ZtidError
from ztid.source import (
    _KEEP_ALIVE_IN_CHILD,
    StaticSource,
    SvidSnapshot,
    _next_generation,
    _Publisher,
    _register_fork_aware,
)
from ztid.spiffeid import SpiffeId, TrustDomain
from ztid.svid import X509Svid

__all__ = ["ENDPOINT_ENV", "WorkloadApiSource", "parse_endpoint"]

log = logging.getLogger("ztid.source")

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
_REVOKED = ("PERMISSION_DENIED", "SVID list cannot be empty")
_NO_RETRY = ("INVALID_ARGUMENT",)


def parse_endpoint(value: str) -> str:
    """Check a Workload API endpoint address (Workload Endpoint §4) and return it unchanged.

    ``unix:///abs/path`` or ``unix:/abs/path`` (no authority, query, fragment or userinfo), or
    ``tcp://IP:PORT`` (an IP literal, a port, nothing else).

    Raises:
        UsageError: the address breaks a rule; the message names it and quotes the input.
    """
    if not isinstance(value, str) or not value:
        raise UsageError(f"Workload API endpoint is empty ({value!r})")

    def bad(why: str) -> UsageError:
        return UsageError(f"invalid Workload API endpoint {value!r}: {why}")

    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise bad("whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if "?" in value or parts.query:
        raise bad("a query is not allowed")
    if "#" in value or parts.fragment:
        raise bad("a fragment is not allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise bad("userinfo is not allowed")
    if parts.scheme == "unix":
        if parts.netloc:
            raise bad("a unix address must not have an authority (use unix:///path)")
        if not parts.path.startswith("/"):
            raise bad("a unix address needs an absolute path")
        return value
    if parts.scheme == "tcp":
        if parts.path:
            raise bad("a tcp address must not have a path")
        try:
            ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            raise bad("a tcp address needs an IP address as host") from None
        if port is None:
            raise bad("a tcp address needs a port")
        return value
    raise bad("the scheme must be 'unix' or 'tcp'")


def _convert(ctx: Any, want: SpiffeId | None) -> tuple[X509Svid | None, BundleSet]:
    """spiffe.X509Context -> (ztid X509Svid or None when ``want`` is absent, BundleSet)."""
    bundles = BundleSet(Bundle(TrustDomain(b.trust_domain.name), list(b.x509_authorities)) for b in ctx.x509_bundle_set.bundles)
    chosen = None
    for s in ctx.x509_svids:
        if want is None or str(s.spiffe_id) == str(want):
            chosen = s
            break
    if chosen is None:
        return None, bundles
    return X509Svid.from_parts(list(chosen.cert_chain), chosen.private_key), bundles


class WorkloadApiSource(_Publisher):
    """The workload's SVID and X.509 bundles from the Workload API, rotating as the agent pushes.

    Args:
        socket_path: the endpoint (``unix:///run/spire/agent.sock``); default ``$SPIFFE_ENDPOINT_SOCKET``.
        timeout: seconds to wait for the first SVID.
        spiffe_id: serve this SVID when the workload has several (default: the first, per §5.3).
        backoff: (first, max) seconds between reconnection attempts.

    Raises:
        UsageError: no endpoint, or a malformed one.
        SourceError: no SVID within ``timeout`` (the agent is unreachable or refused this workload).
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float = 10.0,
        spiffe_id: SpiffeId | str | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        super().__init__()
        endpoint = socket_path if socket_path is not None else os.environ.get(ENDPOINT_ENV)
        if not endpoint:
            raise UsageError(f"no Workload API endpoint: pass socket_path or set {ENDPOINT_ENV}")
        if not endpoint.startswith(("unix:", "tcp:")) and endpoint.startswith("/"):
            endpoint = "unix://" + endpoint  # a bare absolute path is a convenience for local use
        self.endpoint = parse_endpoint(endpoint)
        self._want = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        self._backoff = backoff
        self._lock = threading.Lock()
        self._snapshot: SvidSnapshot | None = None
        self._error: SourceError | None = SourceError("no SVID received from the Workload API yet")
        self._closed = False
        self._forked = False
        self._first = threading.Event()
        self._stop = threading.Event()
        self._cancel: Any = None
        try:
            from spiffe import WorkloadApiClient
            from spiffe.errors import ArgumentError

            self._client = WorkloadApiClient(self.endpoint)
        except ArgumentError as exc:
            raise SourceError(f"cannot use Workload API endpoint {self.endpoint!r}: {exc}") from exc
        self._thread = threading.Thread(target=self._supervise, name="ztid-workloadapi", daemon=True)
        self._thread.start()
        _register_fork_aware(self)
        if not self._first.wait(timeout) or self._snapshot is None:
            err = self._error
            self.close()
            raise SourceError(f"no SVID from the Workload API at {self.endpoint!r} within {timeout}s: {err}") from err

    # -- serving -------------------------------------------------------------------------------

    def snapshot(self) -> SvidSnapshot:
        with self._lock:
            snap, err, closed = self._snapshot, self._error, self._closed
        if closed:
            raise SourceError("SVID source is closed")
        if snap is None:  # a fresh exception each time: re-raising one instance grows its traceback
            raise SourceError(str(err) if err else "no SVID")
        if dt.datetime.now(dt.timezone.utc) >= snap.svid.not_after:
            why = f" (last Workload API error: {err})" if err else ""
            raise SourceError(f"SVID {str(snap.svid.spiffe_id)!r} expired at {snap.svid.not_after.isoformat()} "
                              f"and no newer one arrived{why}")
        return snap

    @property
    def last_error(self) -> SourceError | None:
        """The latest stream error (None while the stream is healthy)."""
        return self._error

    def fork_handoff(self) -> StaticSource:
        """A picklable static copy of the current snapshot, serving until its SVID expires.

        Raises:
            SourceError: this source cannot serve right now.
        """
        return StaticSource.from_snapshot(self.snapshot(), expires=True)

    # -- JWT-SVIDs (unary calls on the same connection) ------------------------------------------

    def fetch_jwt_svid(self, audience: str | list[str] | tuple[str, ...], *, timeout: float = 5.0) -> str:
        """A fresh JWT-SVID (compact JWS) for this workload's SVID identity and ``audience``.

        Raises:
            UsageError: empty audience.
            SourceError: the source is closed or failed closed, this is a forked child, or the
                Workload API refused or failed the call.
        """
        auds = [audience] if isinstance(audience, str) else list(audience)
        if not auds or any(not isinstance(a, str) or not a for a in auds):
            raise UsageError(f"audience must be one or more non-empty strings, got {audience!r}")
        subject = self.snapshot().svid.spiffe_id  # fail closed here too
        if self._forked:
            raise SourceError("forked child: the Workload API connection belongs to the parent; create a new source")
        from spiffe import SpiffeId as _SpSpiffeId
        from spiffe.errors import PySpiffeError

        try:
            jwt = self._client.fetch_jwt_svid(set(auds), _SpSpiffeId(str(subject)), timeout=timeout)
        except PySpiffeError as exc:
            raise SourceError(f"cannot fetch a JWT-SVID for {str(subject)!r}: {exc}") from exc
        return str(jwt.token)

    def fetch_jwt_bundles(self, *, timeout: float = 5.0) -> BundleSet:
        """The JWT authorities of every trust domain the agent knows (a BundleSet without X.509 CAs).

        Raises:
            SourceError: as :meth:`fetch_jwt_svid`.
        """
        if self._closed or self._forked:
            raise SourceError("SVID source is closed" if self._closed else "forked child: create a new source")
        from spiffe.errors import PySpiffeError

        try:
            got = self._client.fetch_jwt_bundles(timeout=timeout)
        except PySpiffeError as exc:
            raise SourceError(f"cannot fetch JWT bundles: {exc}") from exc
        try:
            return BundleSet(Bundle(TrustDomain(b.trust_domain.name), (), dict(b.jwt_authorities)) for b in got.bundles)
        except ZtidError as exc:
            raise SourceError(f"the Workload API sent unusable JWT bundles: {exc}") from exc

    # -- the stream ------------------------------------------------------------------------------

    def _supervise(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            ended = threading.Event()
            outcome: dict[str, Exception] = {}
            got_update = threading.Event()

            def on_update(ctx: Any) -> None:
                got_update.set()
                self._on_update(ctx)

            def on_error(exc: Exception) -> None:
                outcome["error"] = exc
                ended.set()

            handler = self._client.stream_x509_contexts(on_update, on_error, retry_connect=False)
            with self._lock:
                self._cancel = handler
            while not ended.wait(0.2):
                if self._stop.is_set():
                    handler.cancel()
                    return
            handler.cancel()  # the client may leave the failed call open (e.g. after a malformed response)
            if self._stop.is_set():
                return
            message = str(outcome.get("error", "stream ended"))
            if any(m in message for m in _REVOKED):
                self._fail_closed(SourceError(f"the Workload API stopped issuing an SVID to this workload: {message}"))
            elif any(m in message for m in _NO_RETRY):
                self._fail_closed(SourceError(f"the Workload API rejected the request, not retrying: {message}"))
                self._first.set()
                return
            else:
                with self._lock:
                    self._error = SourceError(f"Workload API stream interrupted: {message}")
                log.warning("Workload API stream interrupted (%s); keeping the current SVID, reconnecting", message)
            delay = self._backoff[0] if got_update.is_set() else min(delay * 2, self._backoff[1])
            if self._stop.wait(delay):
                return

    def _on_update(self, ctx: Any) -> None:
        try:
            svid, bundles = _convert(ctx, self._want)
        except (ZtidError, ValueError, TypeError) as exc:  # malformed: discard, keep the last good state
            log.warning("Workload API response discarded: %s", exc)
            with self._lock:
                self._error = SourceError(f"malformed Workload API response discarded: {exc}")
            return
        if svid is None:  # the SVID we serve is no longer issued to us: redaction
            self._fail_closed(SourceError(f"the Workload API no longer issues {str(self._want)!r} to this workload"))
            return
        with self._lock:
            if self._closed:
                return
            cur = self._snapshot
            if cur is not None and cur.svid.cert_chain == svid.cert_chain and cur.bundles == bundles:
                self._error = None  # a reconnect re-sent what we serve: no new generation
                self._first.set()
                return
            snap = SvidSnapshot(svid, bundles, _next_generation())
            self._snapshot, self._error = snap, None
        self._first.set()
        self._publish(snap)

    def _fail_closed(self, error: SourceError) -> None:
        with self._lock:
            had = self._snapshot is not None
            self._snapshot, self._error = None, error
        if had:
            log.error("SVID source failed closed: %s", error)
            self._publish_error(error)
        else:
            log.debug("SVID source still closed: %s", error)

    # -- lifecycle -------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # gRPC is not fork-safe: never touch the inherited channel (not even to close it), keep
        # serving the parent's last snapshot until it expires. No thread survived the fork.
        self._lock = threading.Lock()
        self._sub_lock = threading.Lock()
        self._forked = True
        self._stop = threading.Event()
        self._stop.set()
        _KEEP_ALIVE_IN_CHILD.extend([self._client, self._cancel])
        if self._snapshot is not None:  # a parent that had failed closed stays failed closed, same reason
            self._error = SourceError("forked child: serving the parent's last SVID until it expires (no updates)")
        self._clear_subscribers()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._snapshot = None
            cancel = self._cancel
        self._stop.set()
        self._clear_subscribers()
        if self._forked:
            return
        try:
            if cancel is not None:
                cancel.cancel()
            self._client.close()
        except Exception:  # closing must not raise
            log.debug("closing the Workload API client failed", exc_info=True)

    def __enter__(self) -> "WorkloadApiSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkloadApiSource({self.endpoint!r})"
