"""A feature store on asyncio with ztid mTLS: every request is checked with ztid.require().

Run: python examples/asyncio_service.py. A throwaway dev CA stands in for SPIRE or `ztid agent`.
"""
import asyncio
from pathlib import Path

import ztid
from ztid.bundle import BundleSet
from ztid.devca import DevCA
from ztid.enforce import tls_asyncio
from ztid.enforce.require import configure
from ztid.source import StaticSource

ca = DevCA.create("ai-platform.example")
def source(path):  # noqa: E302 - in production: the Workload API source, nothing else changes
    return StaticSource(ca.issue(f"spiffe://ai-platform.example{path}"), BundleSet([ca.bundle()]))

policy = ztid.load_policy(Path(__file__).resolve().parents[1] / "policy.yaml")

async def handle(reader, writer, peer):  # noqa: E302 - runs with `peer` current for ztid.require
    action = (await reader.read(16)).decode()
    try:
        ztid.require(action)
        writer.write(f"{action} ok for {peer.component}".encode())
    except ztid.PermissionDenied as exc:
        writer.write(f"{action} denied: {exc.decision.reason}".encode())
    writer.close()

async def main():  # noqa: E302
    features = source("/feature-store/main")
    configure(policy=policy, self_id=features.snapshot().svid.spiffe_id)
    server = await tls_asyncio.start_server(handle, "127.0.0.1", 0, source=features, policy=policy)
    port = server.sockets[0].getsockname()[1]
    for who, action in (("/inference/llm", "read"), ("/inference/llm", "write"), ("/pipeline/etl", "write")):
        reader, writer, _ = await tls_asyncio.open_connection("127.0.0.1", port, source=source(who), policy=policy, expect="feature-store")
        writer.write(action.encode())
        print(who, "->", (await reader.read(200)).decode())
    server.close()

asyncio.run(main())
