"""Fixtures for the sidecar server: a dev trust domain on disk, a real grpc.aio server in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from ztid.sidecar.config import SidecarConfig
from ztid.sidecar.server import Sidecar
from ztid.testing import TestCA

TD = "ai-platform.example"
SHIPPED_POLICY = Path(__file__).resolve().parents[2] / "policy.yaml"


@dataclass
class TrustFiles:
    ca: TestCA
    partner: TestCA
    bundle: Path
    cert: Path
    key: Path
    directory: Path


@pytest.fixture(scope="session")
def trust(tmp_path_factory: pytest.TempPathFactory) -> TrustFiles:
    d = tmp_path_factory.mktemp("trust")
    ca = TestCA.create(TD)
    svid = ca.issue(f"spiffe://{TD}/ztid/sidecar", dns_names=("localhost",))  # for gRPC clients hostname check
    (d / "bundle.pem").write_bytes(ca.bundle().to_pem())
    (d / "sidecar.pem").write_bytes(svid.chain_pem())
    (d / "sidecar.key").write_bytes(svid.key_pem())
    (d / "sidecar.key").chmod(0o600)
    return TrustFiles(ca, TestCA.create("partner.example"), d / "bundle.pem", d / "sidecar.pem", d / "sidecar.key", d)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    shutil.copy(SHIPPED_POLICY, path)
    return path


@pytest.fixture
def sock() -> Iterator[str]:
    """A unix socket address in a short private directory (socket paths are limited to ~107 bytes)."""
    d = tempfile.mkdtemp(prefix="ztsc")
    yield f"unix:{d}/authz.sock"
    shutil.rmtree(d, ignore_errors=True)


class Running:
    """A Sidecar on its own event loop thread."""

    def __init__(self, sidecar: Sidecar, loop: asyncio.AbstractEventLoop) -> None:
        self.sidecar, self.loop = sidecar, loop

    def call(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def target(self, address: str | None = None) -> str:
        address = address or self.sidecar.config.listen[0]
        if address.startswith("unix:"):
            return address
        host = address.rpartition(":")[0]
        return f"{host}:{self.sidecar.ports[address]}"


@contextlib.contextmanager
def running(config: SidecarConfig, *, wait: bool = True) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sidecar = Sidecar(config)
    run = Running(sidecar, loop)
    try:
        run.call(sidecar.start())
        if wait:
            run.call(sidecar.wait_loaded(15))
        yield run
    finally:
        with contextlib.suppress(Exception):
            run.call(sidecar.stop(grace=2))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def run_sidecar() -> Callable[..., Any]:
    return running


def check_request(
    *, principal: str = "", certificate: bytes | None = None, destination: str = "", method: str = "GET",
    path: str = "/", headers: Mapping[str, str] | None = None, context_extensions: Mapping[str, str] | None = None,
) -> ea.CheckRequest:
    """A CheckRequest as Envoy's ext_authz filter builds it (URL-encoded certificate, pseudo-headers)."""
    return ea.CheckRequest(attributes=ac.AttributeContext(
        source=ac.AttributeContext.Peer(
            principal=principal,
            certificate="" if certificate is None else urllib.parse.quote(certificate.decode("ascii")),
        ),
        destination=ac.AttributeContext.Peer(principal=destination),
        request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(
            id="req-1", method=method, path=path, host="svc", scheme="https", protocol="HTTP/2",
            headers={":method": method, ":path": path, ":authority": "svc", **(headers or {})},
        )),
        context_extensions=dict(context_extensions or {}),
    ))


@pytest.fixture
def make_request() -> Callable[..., ea.CheckRequest]:
    return check_request


@pytest.fixture
def stub_for() -> Iterator[Callable[[str], ea_grpc.AuthorizationStub]]:
    channels: list[grpc.Channel] = []

    def make(target: str, credentials: grpc.ChannelCredentials | None = None) -> ea_grpc.AuthorizationStub:
        ch = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        channels.append(ch)
        return ea_grpc.AuthorizationStub(ch)

    yield make
    for ch in channels:
        ch.close()
