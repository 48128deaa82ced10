"""Helpers for the wire tests (imported by conftest and the tests): PKI, raw clients, a threaded server."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ztid.source import StaticSource
from ztid.testing import TestCA, bundle_set

ROOT = Path(__file__).resolve().parents[2]
TD = "ai-platform.example"
PARTNER = "partner.example"


def sid(path: str, td: str = TD) -> str:
    return f"spiffe://{td}{path}"


class Pki:
    """Two trust domains: ours (with an intermediate, as SPIRE with an upstream CA) and a partner's."""

    def __init__(self) -> None:
        self.ca = TestCA.create(TD, intermediate=True)
        self.partner = TestCA.create(PARTNER)
        self.bundles = bundle_set(self.ca)
        self.federated = bundle_set(self.ca, self.partner)

    def source(self, path: str, *, federated: bool = False, **issue: Any) -> StaticSource:
        return StaticSource(self.ca.issue(sid(path), **issue), self.federated if federated else self.bundles)


def write_pem(directory: Path, name: str, chain_pem: bytes, key_pem: bytes | None = None) -> tuple[str, str | None]:
    cert = directory / f"{name}.pem"
    cert.write_bytes(chain_pem)
    key = None
    if key_pem is not None:
        key = directory / f"{name}.key"
        key.write_bytes(key_pem)
        os.chmod(key, 0o600)
    return str(cert), None if key is None else str(key)


_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}


def raw_client(address: Any, *, cert: tuple[str, str | None] | None, cafile: str, tls12: bool = False,
               session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    """A plain stdlib mTLS client, as a service ztid did not write would make one (one context per setup,
    so sessions can be offered for resumption)."""
    key = (cert, cafile, tls12)
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            ctx.load_cert_chain(cert[0], cert[1])
        _contexts[key] = ctx
    sock = socket.create_connection(address, timeout=10)
    return ctx.wrap_socket(sock, session=session)


def refused(conn: ssl.SSLSocket) -> bool:
    """True when the server closed the connection without sending a single application byte."""
    try:
        conn.sendall(b"ping\n")
        data = conn.recv(100)
    except (ssl.SSLError, OSError):
        return True
    finally:
        conn.close()
    return data == b""


class Server:
    """A ztid Listener served by a thread: echoes upper-cased lines; records peers and rejections."""

    def __init__(self, source: Any, policy: Any, address: Any = ("127.0.0.1", 0), handler: Callable[[Any], None] | None = None,
                 **kw: Any) -> None:
        from ztid.enforce import tls

        self.handler = handler
        self.peers: list[Any] = []
        self.rejects: list[Exception] = []
        self.required: list[Any] = []
        self.rejected = threading.Event()
        self.listener = tls.listen(address, source=source, policy=policy, on_reject=self._reject, **kw)
        self.address = self.listener.address
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ztid.enforce.require import current_peer

        while True:
            try:
                conn, peer = self.listener.accept()
            except Exception:
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(conn, current_peer), daemon=True).start()

    def _serve(self, conn: Any, current_peer: Callable[[], Any]) -> None:
        with conn:
            self.required.append(current_peer())
            if self.handler is not None:
                self.handler(conn)
                return
            try:
                while True:
                    line = conn.recv(65536)
                    if not line:
                        return
                    conn.sendall(line.upper())
            except OSError:
                return

    def _reject(self, exc: Exception, _addr: Any) -> None:
        self.rejects.append(exc)
        self.rejected.set()

    def wait_reject(self) -> Exception:
        assert self.rejected.wait(10), "the server never refused the client"
        return self.rejects[-1]

    def close(self) -> None:
        self.listener.close()
