"""A data store served over ztid mTLS sockets: training reads a shard, inference is refused.

Run: python examples/socket_service.py. A throwaway dev CA stands in for SPIRE or `ztid agent`.
"""
import threading
from pathlib import Path

import ztid
from ztid.bundle import BundleSet
from ztid.devca import DevCA
from ztid.enforce import tls
from ztid.enforce.require import configure
from ztid.source import StaticSource

ca = DevCA.create("ai-platform.example")
def source(path):  # noqa: E302 - in production: the Workload API source, nothing else changes
    return StaticSource(ca.issue(f"spiffe://ai-platform.example{path}"), BundleSet([ca.bundle()]))

# --- the data-store service: these lines are the whole adoption ---------------------------------
policy = ztid.load_policy(Path(__file__).resolve().parents[1] / "policy.yaml")
store = source("/data-store/main")
configure(policy=policy, self_id=store.snapshot().svid.spiffe_id)
listener = tls.listen(("127.0.0.1", 0), source=store, policy=policy)

def serve():  # noqa: E302
    while True:
        conn, peer = listener.accept()             # verified against its own bundle, admitted by policy
        with conn:                                 # ztid.require() sees `peer` inside this block
            ztid.require("read")
            conn.sendall(f"shard-0001 for {peer.component}".encode())

threading.Thread(target=serve, daemon=True).start()
# --- two clients --------------------------------------------------------------------------------
for who in ("/training/job-7", "/inference/llm"):
    try:
        with tls.connect(listener.address, source=source(who), policy=policy, expect="data-store") as conn:
            print(who, "->", conn.recv(100).decode() or "refused")
    except (ztid.ZtidError, OSError) as exc:
        print(who, "-> refused:", exc)
