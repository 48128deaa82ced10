"""ztid.enforce.grpc: real gRPC servers (sync and aio) with rotating credentials and per-method authorization."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import grpc.aio
import pytest
from wire_helpers import PARTNER, TD, sid

from ztid.enforce import tls
from ztid.enforce.grpc import AioAuthzInterceptor, AuthzInterceptor, channel_credentials, secure_channel, server_credentials
from ztid.enforce.require import current_peer
from ztid.errors import PermissionDenied
from ztid.source import StaticSource
from ztid.svid import X509Svid
from ztid.testing import TestCA

NAME = "registry.ai-platform.example"  # gRPC clients check a DNS name, so the server's SVID carries one
OVERRIDE = (("grpc.ssl_target_name_override", NAME),)
SERVICE = "ml.Registry"


def _handlers(calls):
    def get(request, context):
        calls.append(current_peer())
        return b"model:" + request

    def listing(request, context):
        calls.append(current_peer())
        yield b"a"
        yield b"b"

    def upload(request_iterator, context):
        calls.append(current_peer())
        return b"".join(request_iterator)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "GetModel": grpc.unary_unary_rpc_method_handler(get),
        "PutModel": grpc.unary_unary_rpc_method_handler(get),
        "ListModels": grpc.unary_stream_rpc_method_handler(listing),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
    })


@pytest.fixture
def registry(pki, policy):
    """A sync gRPC registry on 127.0.0.1 enforcing the shipped policy."""
    servers = []

    def start(source=None, pol=None, **kw):
        source = source or StaticSource(pki.ca.issue(sid("/registry/main"), dns_names=[NAME]), pki.bundles)
        calls = []
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[AuthzInterceptor(pol or policy, source, **kw)])
        server.add_generic_rpc_handlers((_handlers(calls),))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(source))
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", source, calls

    yield start
    for server in servers:
        server.stop(None)


def plain_channel(target, svid, roots_pem):
    """A grpcio client ztid did not write: ssl_channel_credentials with files' contents."""
    creds = grpc.ssl_channel_credentials(root_certificates=roots_pem, private_key=svid.key_pem(), certificate_chain=svid.chain_pem())
    return grpc.secure_channel(target, creds, options=OVERRIDE)


def _code(fn):
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_plain_grpcio_client_per_method_decisions(pki, registry):
    target, _, calls = registry()
    roots = pki.ca.bundle().to_pem()
    with plain_channel(target, pki.ca.issue(sid("/inference/llm")), roots) as chan:
        assert chan.unary_unary(f"/{SERVICE}/GetModel")(b"m1", timeout=10) == b"model:m1"
        assert list(chan.unary_stream(f"/{SERVICE}/ListModels")(b"", timeout=10)) == [b"a", b"b"]
        code, details = _code(lambda: chan.unary_unary(f"/{SERVICE}/PutModel")(b"m1", timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "no_matching_rule" in details and "inference" in details
        code, _ = _code(lambda: chan.stream_unary(f"/{SERVICE}/Upload")(iter([b"x"]), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert [p.component for p in calls] == ["inference", "inference"]  # handlers saw the peer; denied ones never ran
    with plain_channel(target, pki.ca.issue(sid("/training/job-7")), roots) as chan:
        assert chan.unary_unary(f"/{SERVICE}/PutModel")(b"ck", timeout=10) == b"model:ck"
        assert chan.stream_unary(f"/{SERVICE}/Upload")(iter([b"x", b"y"]), timeout=10) == b"xy"
    with plain_channel(target, pki.ca.issue(sid("/monitoring-admin/x")), roots) as chan:
        code, details = _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_method_actions_override(pki, registry):
    target, _, _ = registry(method_actions={"PutModel": "read", f"/{SERVICE}/GetModel": "write"})
    with plain_channel(target, pki.ca.issue(sid("/inference/llm")), pki.ca.bundle().to_pem()) as chan:
        assert chan.unary_unary(f"/{SERVICE}/PutModel")(b"m", timeout=10) == b"model:m"
        assert _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_no_certificate_expired_and_untrusted_clients_fail(pki, registry):
    target, _, calls = registry()
    roots = pki.ca.bundle().to_pem()
    no_cert = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=OVERRIDE)
    assert _code(lambda: no_cert.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))[0] == grpc.StatusCode.UNAVAILABLE
    expired = pki.ca.expired(sid("/inference/llm"))
    for svid in (X509Svid.from_parts(expired.chain, expired.key), pki.ca.other_root().issue(sid("/inference/llm"))):
        with plain_channel(target, svid, roots) as chan:
            assert _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))[0] == grpc.StatusCode.UNAVAILABLE
    no_cert.close()
    assert calls == []


def test_federation_forgery_is_unauthenticated(pki, federated_policy, registry):
    source = StaticSource(pki.ca.issue(sid("/registry/main"), dns_names=[NAME]), pki.federated)
    target, _, calls = registry(source=source, pol=federated_policy)
    roots = pki.ca.bundle().to_pem()
    with plain_channel(target, pki.partner.issue(sid("/inference/p1", PARTNER)), roots) as chan:  # genuine partner
        assert chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10) == b"model:m"
    forged = pki.ca.foreign(sid("/inference/p1", PARTNER))
    with plain_channel(target, X509Svid.from_parts(forged.chain, forged.key), roots) as chan:
        code, details = _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and PARTNER in details
    assert [p.trust_domain.name for p in calls] == [PARTNER]


def test_rotation_new_connections_new_svid_removed_ca_refused(pki, policy, registry):
    target, source, _ = registry()
    roots = pki.ca.bundle().to_pem()
    client = StaticSource(pki.ca.issue(sid("/inference/llm")), pki.bundles)
    before = tls.connect(("127.0.0.1", int(target.rsplit(":", 1)[1])), source=client, policy=policy, expect="registry")
    old_serial = before.peer_svid.leaf.serial_number
    before.close()
    live = plain_channel(target, pki.ca.issue(sid("/inference/llm")), roots)
    assert live.unary_unary(f"/{SERVICE}/GetModel")(b"1", timeout=10) == b"model:1"
    new_ca = TestCA.create(TD)
    source.update(new_ca.issue(sid("/registry/main"), dns_names=[NAME]), pki.bundles.replace(new_ca.bundle()))
    both = pki.bundles.replace(pki.ca.bundle().with_x509_authorities([pki.ca.root, new_ca.root]))
    rotated = StaticSource(new_ca.issue(sid("/inference/llm")), both)
    after = tls.connect(("127.0.0.1", int(target.rsplit(":", 1)[1])), source=rotated, policy=policy, expect="registry")
    assert after.peer_svid.leaf.serial_number == source.snapshot().svid.leaf.serial_number != old_serial
    after.close()
    # a client whose CA was dropped cannot open a new connection...
    with plain_channel(target, pki.ca.issue(sid("/inference/llm")), b"".join([roots, new_ca.bundle().to_pem()])) as chan:
        assert _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))[0] in (
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    # ...while ztid's rotating channel, built from the new snapshot, works.
    with secure_channel(target, source=rotated, policy=policy, expect="registry", server_name=NAME) as chan:
        assert chan.unary_unary(f"/{SERVICE}/GetModel")(b"2", timeout=10) == b"model:2"
    # the connection opened before the rotation is re-authorized per call: its CA is gone, so calls stop
    code, _ = _code(lambda: live.unary_unary(f"/{SERVICE}/GetModel")(b"3", timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    live.close()


def test_rotating_channel_checks_the_server_and_follows_the_source(pki, policy, federated_policy, registry):
    target, _, _ = registry()
    client = StaticSource(pki.ca.issue(sid("/inference/llm")), pki.bundles)
    with pytest.raises(PermissionDenied) as info:
        secure_channel(target, source=client, policy=policy, expect="data-store", server_name=NAME)
    assert info.value.decision.code == "unexpected_peer"
    with secure_channel(target, source=client, policy=policy, expect="registry", server_name=NAME) as chan:
        get = chan.unary_unary(f"/{SERVICE}/GetModel")
        assert get(b"1", timeout=10) == b"model:1"
        client.update(pki.ca.issue(sid("/inference/llm")), pki.bundles)
        assert get(b"2", timeout=10) == b"model:2"  # the same multi-callable, now on a rebuilt channel
        assert len(chan._old) == 1
    # A server presenting a partner ID signed by our CA: trusting only partner's bundle, the handshake fails.
    forged = pki.ca.foreign(sid("/registry/main", PARTNER))
    fake = StaticSource(X509Svid.from_parts(forged.chain, forged.key), pki.federated)
    target, _, _ = registry(source=fake, pol=federated_policy)
    fed_client = StaticSource(pki.ca.issue(sid("/inference/llm")), pki.federated)
    with grpc.secure_channel(target, channel_credentials(fed_client, trust_domain=PARTNER), options=OVERRIDE) as chan:
        assert _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"m", timeout=10))[0] == grpc.StatusCode.UNAVAILABLE


def test_aio_server(pki, policy):
    async def main():
        source = StaticSource(pki.ca.issue(sid("/registry/main"), dns_names=[NAME]), pki.bundles)
        seen = []

        async def get(request, context):
            seen.append(current_peer())
            return b"model:" + request

        async def listing(request, context):
            seen.append(current_peer())
            for item in (b"a", b"b"):
                yield item

        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "GetModel": grpc.unary_unary_rpc_method_handler(get),
            "PutModel": grpc.unary_unary_rpc_method_handler(get),
            "ListModels": grpc.unary_stream_rpc_method_handler(listing),
        })
        server = grpc.aio.server(interceptors=[AioAuthzInterceptor(policy, source)])
        server.add_generic_rpc_handlers((handler,))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(source))
        await server.start()
        try:
            svid = pki.ca.issue(sid("/inference/llm"))
            creds = grpc.ssl_channel_credentials(pki.ca.bundle().to_pem(), svid.key_pem(), svid.chain_pem())
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=OVERRIDE) as chan:
                assert await chan.unary_unary(f"/{SERVICE}/GetModel")(b"x", timeout=10) == b"model:x"
                assert [m async for m in chan.unary_stream(f"/{SERVICE}/ListModels")(b"", timeout=10)] == [b"a", b"b"]
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await chan.unary_unary(f"/{SERVICE}/PutModel")(b"x", timeout=10)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "no_matching_rule" in info.value.details()
        finally:
            await server.stop(None)
        assert [p.component for p in seen] == ["inference", "inference"]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_source_that_stops_serving_denies_every_call(pki, registry):
    target, source, calls = registry()
    with plain_channel(target, pki.ca.issue(sid("/inference/llm")), pki.ca.bundle().to_pem()) as chan:
        assert chan.unary_unary(f"/{SERVICE}/GetModel")(b"1", timeout=10) == b"model:1"
        source.close()  # e.g. the Workload API revoked this workload: fail closed
        code, details = _code(lambda: chan.unary_unary(f"/{SERVICE}/GetModel")(b"2", timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot authorize" in details
    assert len(calls) == 1
