"""The ext_authz gRPC server: listeners, health, reflection, metrics, reload, drain; no policy logic.

Lifecycle::

    sidecar = Sidecar(load_config("sidecar.yaml"))
    await sidecar.start()        # listeners bound; health NOT_SERVING; every Check denied (no_policy)
    await sidecar.wait_loaded()  # policy, bundles (and own SVID, decision log) loaded; health SERVING
    ...                          # policy file edits and SIGHUP reload it (atomic; the last good stays)
    await sidecar.stop()         # health NOT_SERVING, new RPCs refused, in-flight Checks answered,
                                 # the decision log closed with a signed checkpoint

:meth:`Sidecar.serve` does all of it and installs SIGTERM/SIGINT (drain and exit) and SIGHUP (reload).
Checks run on the event loop: the mapping is CPU-only (tens of microseconds) plus one ``write(2)``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import stat
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ztid.audit.decisions import DecisionLog
from ztid.bundle import BundleSet
from ztid.enforce.extauthz import CALLER_NOT_ALLOWED, CheckOutcome, ExtAuthz
from ztid.errors import TransportError, ZtidError
from ztid.sidecar.config import SidecarConfig
from ztid.sidecar.metrics import SidecarMetrics
from ztid.sidecar.tls import caller_allowed

__all__ = ["AUTHZ_SERVICE", "Sidecar"]

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
_log = logging.getLogger("ztid.sidecar")


def _authorization_handler(sidecar: "Sidecar") -> grpc.GenericRpcHandler:
    """Check, taking raw bytes: a request that does not parse is answered as a deny, never an RPC error."""

    async def check(data: bytes, context: Any) -> external_auth_pb2.CheckResponse:
        try:
            request: Any = external_auth_pb2.CheckRequest.FromString(data)
        except Exception:  # noqa: BLE001 - protobuf DecodeError and friends: a malformed request
            request = None
        allowed = sidecar.config.allowed_clients
        if allowed and not caller_allowed(context, allowed):
            return sidecar.answer(request, refuse="this caller may not ask for authorization decisions").wire
        return sidecar.answer(request).wire

    # Answers go out as bytes: an allow is a pre-serialized template with its decision id spliced in.
    handler = grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(AUTHZ_SERVICE, {"Check": handler})


class Sidecar:
    """One ext_authz server built from a :class:`SidecarConfig`.

    Args:
        config: the validated configuration.
        metrics: the metric set (default: a fresh one on its own registry).
    """

    def __init__(self, config: SidecarConfig, *, metrics: SidecarMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else SidecarMetrics()
        self.authz = ExtAuthz(lambda: None, lambda: None)  # until loaded: every Check is a no_policy deny
        self.ports: dict[str, int] = {}
        self.metrics_port: int | None = None
        self.load_error: Exception | None = None
        self._watcher: Any = None
        self._source: Any = None
        self._static_bundles: BundleSet | None = None
        self._decision_log: DecisionLog | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._loaded: asyncio.Event | None = None
        self._loader: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ the hot path
    def check(self, request: Any, *, refuse: str | None = None) -> external_auth_pb2.CheckResponse:
        """Answer one CheckRequest (never raises) and count it; ``refuse`` denies it as caller_not_allowed."""
        return self.answer(request, refuse=refuse).response

    def answer(self, request: Any, *, refuse: str | None = None) -> CheckOutcome:
        """:meth:`check`, returning the whole outcome (``.wire`` is what the server sends)."""
        start = time.perf_counter()
        outcome = self.authz.evaluate(request) if refuse is None else self.authz.refuse(CALLER_NOT_ALLOWED, refuse)
        d = outcome.decision
        self.metrics.observe(d.allowed, d.code, d.would_deny, time.perf_counter() - start)
        return outcome

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the listeners and start answering (denying until loaded); load in the background.

        Raises:
            TransportError: a listener cannot be bound.
        """
        self._loaded = asyncio.Event()
        # SO_REUSEPORT only when this is one of several workers; otherwise a second sidecar on the
        # same port is an error, not a silent split of the traffic.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if self.config.workers > 1 else 0)])
        server.add_generic_rpc_handlers((_authorization_handler(self),))
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.config.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection(
                (external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
        await self._set_health(False)
        for address in self.config.listen:
            self.ports[address] = self._bind(server, address)
        await server.start()
        self._server = server
        if self.config.metrics:
            self.metrics_port = self.metrics.serve(self.config.metrics)
        self._loader = asyncio.get_running_loop().create_task(self._load_until_done())

    def _bind(self, server: grpc.aio.Server, address: str) -> int:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            _remove_stale_socket(path)
        try:
            port = server.add_insecure_port(address) if not self.config.tls or address.startswith("unix:") \
                else server.add_secure_port(address, self._tls_credentials())
        except RuntimeError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from exc
        if port == 0 and not address.startswith("unix:"):
            raise TransportError(f"cannot listen on {address}")
        return port

    def _tls_credentials(self) -> grpc.ServerCredentials:
        from ztid.sidecar.tls import server_credentials

        return server_credentials(self._ensure_source(), self.config.allowed_clients)

    async def wait_loaded(self, timeout: float | None = None) -> None:
        """Wait until the policy and bundles are loaded and health is SERVING.

        Raises:
            TimeoutError: not loaded within ``timeout`` (``load_error`` says why).
        """
        assert self._loaded is not None, "start() first"
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def _load_until_done(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await loop.run_in_executor(None, self._load)
            except ZtidError as exc:
                if self.load_error is None or str(self.load_error) != str(exc):
                    _log.warning("sidecar not ready, retrying: %s", exc)
                self.load_error = exc
                await asyncio.sleep(self.config.reload_interval)
                continue
            self.load_error = None
            _settle_heap()
            await self._set_health(True)
            assert self._loaded is not None
            self._loaded.set()
            _log.info("sidecar serving: policy sha256 %s", self._watcher.current.digest[:12])
            return

    def _ensure_source(self) -> Any:
        if self._source is None and self.config.has_svid:
            if self.config.workload_api:
                from ztid.source_workload import WorkloadApiSource

                self._source = WorkloadApiSource(self.config.workload_api)
            else:
                from ztid.source_files import FileSource

                self._source = FileSource(self.config.svid_cert, self.config.svid_key, self.config.bundles,
                                          trust_domain=self.config.trust_domain,
                                          poll_interval=self.config.reload_interval)
        return self._source

    def _load(self) -> None:
        """Load everything (blocking; runs in a worker thread)."""
        from ztid.policy.watch import PolicyWatcher

        cfg = self.config
        source = self._ensure_source()
        if source is None and self._static_bundles is None:
            self._static_bundles = BundleSet.load(*cfg.bundles, trust_domain=cfg.trust_domain)
        if source is not None:
            snap = source.snapshot()
            self.metrics.svid_expiry.set(snap.svid.not_after.timestamp())
            source.subscribe(lambda s: self.metrics.svid_expiry.set(s.svid.not_after.timestamp()))
        if self._watcher is None:
            self._watcher = PolicyWatcher(cfg.policy, on_change=self._policy_changed, on_error=self._policy_failed)
        if cfg.decision_log and self._decision_log is None:
            signer = (lambda: source.snapshot().svid) if source is not None else None
            self._decision_log = DecisionLog(cfg.decision_log, signer=signer, checkpoint_every=cfg.checkpoint_every,
                                             fsync=cfg.fsync)
        self._watcher.start(cfg.reload_interval)
        self.metrics.policy(self._watcher.current.digest)
        self.metrics.loaded.set(1)
        watcher = self._watcher
        bundles = (lambda: source.snapshot().bundles) if source is not None else (lambda: self._static_bundles)
        self.authz = ExtAuthz(lambda: watcher.current, bundles, config=cfg.extauthz, log=self._decision_log)

    def _policy_changed(self, old: Any, new: Any) -> None:
        self.metrics.reloads.labels(result="success").inc()
        self.metrics.policy(new.digest)

    def _policy_failed(self, error: Exception) -> None:
        self.metrics.reloads.labels(result="failure").inc()

    def reload(self) -> bool:
        """Re-read the policy file now (what SIGHUP does); True when a new policy is in force."""
        return bool(self._watcher is not None and self._watcher.reload())

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", AUTHZ_SERVICE):
            await self._health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new RPCs, answer in-flight Checks (up to ``grace`` s), close the log."""
        if self._stopping:
            return
        self._stopping = True
        if self._health is not None:
            await self._set_health(False)
        if self._server is not None:
            await self._server.stop(self.config.drain_seconds if grace is None else grace)
        if self._loader is not None:
            self._loader.cancel()
        if self._watcher is not None:
            self._watcher.stop()
        if self._decision_log is not None:
            self._decision_log.close()
        if self._source is not None:
            self._source.close()
        self.metrics.close()
        for address in self.config.listen:
            if address.startswith("unix:"):
                try:
                    os.unlink(address[len("unix:"):])
                except OSError:
                    pass

    async def serve(self, *, ready: Any = None, children: Any = None) -> None:
        """Run until SIGTERM or SIGINT, then drain. SIGHUP reloads the policy.

        Args:
            ready: called with this Sidecar once the listeners are bound.
            children: worker processes (``multiprocessing.Process``) to pass SIGHUP/SIGTERM on to;
                if one of them exits on its own, this one drains too (so the container restarts whole).
        """
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        kids = list(children or ())

        def hup() -> None:
            self._on_sighup()
            for kid in kids:
                if kid.is_alive():
                    os.kill(kid.pid, signal.SIGHUP)

        loop.add_signal_handler(signal.SIGTERM, done.set)
        loop.add_signal_handler(signal.SIGINT, done.set)
        loop.add_signal_handler(signal.SIGHUP, hup)

        async def watch_children() -> None:
            while not done.is_set():
                if any(not kid.is_alive() for kid in kids):
                    _log.error("a sidecar worker exited; draining all workers")
                    done.set()
                await asyncio.sleep(0.5)

        watcher = loop.create_task(watch_children()) if kids else None
        try:
            await self.start()
            if ready is not None:
                ready(self)
            await done.wait()
            for kid in kids:
                if kid.is_alive():
                    kid.terminate()  # SIGTERM: each worker drains on its own
            _log.info("draining (up to %ss)", self.config.drain_seconds)
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _on_sighup(self) -> None:
        if self._watcher is not None:
            self._watcher.request_reload()


def _settle_heap() -> None:
    """Move everything loaded so far (modules, policy, certificates: ~40k objects) out of the GC's reach.

    A full (generation 2) collection walks every tracked object; with ztid's imports that took 9 ms
    here, and the per-RPC garbage of grpc.aio triggers one every second or so: a 9 ms stall of the
    event loop that put ~1% of Checks behind it (the p99). Frozen objects are still freed by
    reference counting; only cycles among them (none expected in loaded config) would be kept.
    """
    gc.collect()
    gc.freeze()


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` only if it is a socket nobody answers on (left by a crash); never a live one.

    Raises:
        TransportError: another server is listening there.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return  # not a socket: let the bind fail with its own error
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    finally:
        probe.close()
    raise TransportError(f"another server is listening on unix:{path}")
