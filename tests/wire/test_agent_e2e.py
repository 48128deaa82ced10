"""End to end with the dev agent: SVIDs from the Workload API, rotating under live mTLS traffic."""

from __future__ import annotations

import datetime as dt
import time

from wire_helpers import TD, sid

from ztid.agent.server import DevAgent
from ztid.devca import DevCA
from ztid.enforce import tls
from ztid.source_workload import WorkloadApiSource


def _wait(predicate, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_workload_api_sources_rotate_under_traffic(policy, serve, short_tmp):
    DevCA.create(TD, intermediate=True).save(short_tmp / "ca")
    rotate = dt.timedelta(seconds=1)
    with DevAgent(short_tmp / "ca", short_tmp / "s.sock", spiffe_id=sid("/data-store/main"), rotate_every=rotate) as store_agent, \
         DevAgent(short_tmp / "ca", short_tmp / "c.sock", spiffe_id=sid("/training/job-7"), rotate_every=rotate) as client_agent:
        store = WorkloadApiSource(store_agent.endpoint)
        client = WorkloadApiSource(client_agent.endpoint)
        try:
            server = serve(store, policy)
            first = tls.connect(server.address, source=client, policy=policy, expect="data-store", action="read")
            first.sendall(b"a")
            assert first.recv(10) == b"A"
            serial = first.peer_svid.leaf.serial_number
            generation = store.snapshot().generation
            assert _wait(lambda: store.snapshot().generation != generation), "the agent never rotated the SVID"
            with tls.connect(server.address, source=client, policy=policy, expect="data-store", action="read") as second:
                assert second.peer_svid.leaf.serial_number != serial  # the listener picked up the rotated SVID
                second.sendall(b"b")
                assert second.recv(10) == b"B"
            first.sendall(b"c")  # the connection made before the rotation carries on
            assert first.recv(10) == b"C"
            first.close()
            assert [p.component for p in server.peers] == ["training", "training"]
        finally:
            store.close()
            client.close()
