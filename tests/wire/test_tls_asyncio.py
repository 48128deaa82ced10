"""ztid.enforce.tls_asyncio: the same guarantees for asyncio streams, over real handshakes."""

from __future__ import annotations

import asyncio

import pytest
from wire_helpers import PARTNER, TD, sid

from ztid.enforce import tls_asyncio
from ztid.enforce.require import current_peer
from ztid.errors import PermissionDenied, SvidError, TransportError
from ztid.source import StaticSource
from ztid.spiffeid import SpiffeId
from ztid.svid import X509Svid
from ztid.testing import TestCA


async def _echo(reader, writer, peer):
    assert current_peer() == peer  # the handler runs inside peer_scope(peer)
    writer.write(f"{peer.component}:".encode() + (await reader.read(100)).upper())
    await writer.drain()
    writer.close()


async def _talk(port, source, policy, expect="data-store", **kw):
    reader, writer, server = await tls_asyncio.open_connection("127.0.0.1", port, source=source, policy=policy, expect=expect, **kw)
    writer.write(b"hi")
    await writer.drain()
    data = await reader.read(100)
    writer.close()
    return data, server


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_allowed_denied_and_rotation(pki, policy):
    async def main():
        rejects: list[Exception] = []
        source = pki.source("/data-store/main")
        server = await tls_asyncio.start_server(_echo, "127.0.0.1", 0, source=source, policy=policy, on_reject=lambda e, a: rejects.append(e))
        port = server.sockets[0].getsockname()[1]
        async with server:
            data, peer = await _talk(port, pki.source("/training/job-7"), policy, action="read")
            assert data == b"training:HI" and peer.component == "data-store"
            first_serial = (await _serial(port, pki, policy))
            # denied by the shipped policy: closed before the handler runs
            data, _ = await _talk(port, pki.source("/inference/llm"), policy)
            assert data == b""
            assert isinstance(rejects[-1], PermissionDenied) and rejects[-1].decision.code == "explicit_deny"
            # rotation: the next handshake presents the new SVID, no restart
            source.update(pki.ca.issue(sid("/data-store/main")), pki.bundles)
            assert await _serial(port, pki, policy) == source.snapshot().svid.leaf.serial_number != first_serial
            # a CA dropped from the server's bundle is refused at once
            new_ca = TestCA.create(TD)
            source.update(new_ca.issue(sid("/data-store/main")), pki.bundles.replace(new_ca.bundle()))
            client = pki.source("/training/job-7")
            client.update(client.snapshot().svid, pki.bundles.replace(pki.ca.bundle().with_x509_authorities([pki.ca.root, new_ca.root])))
            try:
                data, _ = await _talk(port, client, policy)
            except (TransportError, OSError):
                data = b""
            assert data == b""

    _run(main())


async def _serial(port, pki, policy):
    reader, writer, _ = await tls_asyncio.open_connection("127.0.0.1", port, source=pki.source("/training/job-7"), policy=policy, expect="data-store")
    ssl_obj = writer.get_extra_info("ssl_object")
    from cryptography import x509

    serial = x509.load_der_x509_certificate(ssl_obj.getpeercert(binary_form=True)).serial_number
    writer.close()
    return serial


def test_client_checks_the_server(pki, policy, federated_policy):
    async def main():
        server = await tls_asyncio.start_server(_echo, "127.0.0.1", 0, source=pki.source("/data-store/main"), policy=policy)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(PermissionDenied) as info:
                await _talk(port, pki.source("/training/job-7"), policy, expect="registry")
            assert info.value.decision.code == "unexpected_peer"
            with pytest.raises(PermissionDenied):
                await _talk(port, pki.source("/inference/llm"), policy, action="read")
        forged = pki.ca.foreign(sid("/data-store/main", PARTNER))
        fake = StaticSource(X509Svid.from_parts(forged.chain, forged.key), pki.federated)
        server = await tls_asyncio.start_server(_echo, "127.0.0.1", 0, source=fake, policy=federated_policy)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(TransportError) as info:
                await _talk(port, pki.source("/training/job-7", federated=True), federated_policy,
                            expect=SpiffeId.parse(sid("/data-store/main", PARTNER)))
            assert isinstance(info.value.__cause__, SvidError)

    _run(main())


def test_unix_socket_and_forged_client(pki, federated_policy, short_tmp):
    async def main():
        path = short_tmp / "a.sock"
        rejects: list[Exception] = []
        server = await tls_asyncio.start_server(_echo, path=path, source=pki.source("/data-store/main", federated=True),
                                                policy=federated_policy, on_reject=lambda e, a: rejects.append(e))
        async with server:
            genuine = StaticSource(pki.partner.issue(sid("/training/job-1", PARTNER)), pki.federated)
            reader, writer, _ = await tls_asyncio.open_connection(path=path, source=genuine, policy=federated_policy, expect="data-store")
            writer.write(b"x")
            assert await reader.read(100) == b"training:X"
            writer.close()
            forged = pki.ca.foreign(sid("/training/job-1", PARTNER))
            fake = StaticSource(X509Svid.from_parts(forged.chain, forged.key), pki.federated)
            reader, writer, _ = await tls_asyncio.open_connection(path=path, source=fake, policy=federated_policy, expect="data-store")
            writer.write(b"x")
            try:
                data = await reader.read(100)
            except OSError:
                data = b""
            assert data == b""
            writer.close()
            assert isinstance(rejects[-1], TransportError) and isinstance(rejects[-1].__cause__, SvidError)

    _run(main())
