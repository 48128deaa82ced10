"""WorkloadApiSource against a scripted Workload API server: the standard's error and redaction rules."""

from __future__ import annotations

import queue
import threading
from concurrent import futures

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from ztid._proto import workload_pb2 as pb
from ztid._proto import workload_pb2_grpc as pb_grpc
from ztid.devca import DevCA
from ztid.errors import SourceError
from ztid.source_workload import WorkloadApiSource

END = object()


class Scripted(pb_grpc.SpiffeWorkloadAPIServicer):
    """FetchX509SVID streams whatever the test puts on ``script``: a response, a StatusCode to abort, or END."""

    def __init__(self) -> None:
        self.script: queue.Queue = queue.Queue()
        self.calls = 0
        self.active = 0
        self.headers: list[str | None] = []

    def FetchX509SVID(self, request, context):
        self.calls += 1
        self.active += 1
        self.headers.append(dict(context.invocation_metadata()).get("workload.spiffe.io"))
        try:
            while context.is_active():
                try:
                    item = self.script.get(timeout=0.1)
                except queue.Empty:
                    continue
                if not context.is_active():  # the client went away: leave the item for the next call
                    with self.script.mutex:
                        self.script.queue.appendleft(item)
                        self.script.not_empty.notify()
                    return
                if item is END:
                    return
                if isinstance(item, grpc.StatusCode):
                    context.abort(item, f"scripted {item.name}")
                yield item
        finally:
            self.active -= 1


@pytest.fixture
def fake(short_dir):
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(servicer, server)
    path = short_dir / "fake.sock"
    server.add_insecure_port(f"unix:{path}")
    server.start()
    servicer.endpoint = f"unix://{path}"
    yield servicer
    server.stop(None)


@pytest.fixture
def ca() -> DevCA:
    return DevCA.create("dev.local")


def response(ca: DevCA, spiffe_id: str = "spiffe://dev.local/w", *, key: bool = True) -> pb.X509SVIDResponse:
    svid = ca.issue(spiffe_id)
    der = serialization.Encoding.DER
    return pb.X509SVIDResponse(svids=[pb.X509SVID(
        spiffe_id=spiffe_id,
        x509_svid=b"".join(c.public_bytes(der) for c in svid.cert_chain),
        x509_svid_key=svid.private_key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()) if key else b"",
        bundle=ca.root.public_bytes(der),
    )])


def _start(fake, **kw) -> WorkloadApiSource:
    return WorkloadApiSource(fake.endpoint, timeout=kw.pop("timeout", 5), backoff=(0.05, 0.2), **kw)


def test_every_call_carries_the_security_header(fake, ca) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    src.close()
    assert fake.headers == ["true"]


def test_invalid_argument_is_not_retried(fake) -> None:
    fake.script.put(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(SourceError, match="not retrying"):
        _start(fake, timeout=10)
    assert fake.calls == 1


def test_malformed_response_is_discarded_and_the_last_good_state_kept(fake, ca, wait) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    try:
        good = src.snapshot()
        fake.script.put(response(ca, key=False))  # mandatory field empty (API §4.5)
        wait(lambda: src.last_error is not None, what="the malformed response to be noticed")
        assert src.snapshot() is good
        wait(lambda: fake.calls >= 2 and fake.active == 1, what="a reconnect, the failed call released")
        fake.script.put(response(ca))  # on the reconnected stream
        wait(lambda: src.snapshot().generation > good.generation, what="the next good response")
    finally:
        src.close()


def test_response_without_svids_is_redaction_and_fails_closed(fake, ca, wait) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    errors: list[SourceError] = []
    src.subscribe(lambda s: None, on_error=errors.append)
    try:
        fake.script.put(pb.X509SVIDResponse())
        wait(lambda: errors, what="fail closed on an empty SVID list")
        with pytest.raises(SourceError):
            src.snapshot()
    finally:
        src.close()


def test_stream_end_keeps_the_svid_and_reconnects(fake, ca, wait) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    try:
        first = src.snapshot()
        fake.script.put(END)
        wait(lambda: fake.calls >= 2, what="a reconnect after the stream ended")
        assert src.snapshot() is first
        fake.script.put(response(ca, "spiffe://dev.local/w2"))
        wait(lambda: str(src.snapshot().svid.spiffe_id) == "spiffe://dev.local/w2", what="the new stream's SVID")
    finally:
        src.close()


def test_permission_denied_on_an_open_stream_fails_closed(fake, ca, wait) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    try:
        fake.script.put(grpc.StatusCode.PERMISSION_DENIED)
        wait(lambda: src.last_error is not None and "PERMISSION_DENIED" in str(src.last_error), what="fail closed")
        with pytest.raises(SourceError, match="PERMISSION_DENIED"):
            src.snapshot()
    finally:
        src.close()


def test_federated_bundles_are_replaced_per_response(fake, ca, wait) -> None:
    partner = DevCA.create("partner.example")
    with_fed = response(ca)
    with_fed.federated_bundles["spiffe://partner.example"] = partner.root.public_bytes(serialization.Encoding.DER)
    fake.script.put(with_fed)
    src = _start(fake)
    try:
        assert {td.name for td in src.snapshot().bundles} == {"dev.local", "partner.example"}
        fake.script.put(response(ca))  # no federated bundles: partner.example must be dropped
        wait(lambda: {td.name for td in src.snapshot().bundles} == {"dev.local"}, what="the federated bundle to go")
    finally:
        src.close()


def test_close_from_another_thread_stops_the_watcher(fake, ca) -> None:
    fake.script.put(response(ca))
    src = _start(fake)
    t = threading.Thread(target=src.close)
    t.start()
    t.join(10)
    assert not t.is_alive()
    src._thread.join(10)
    assert not src._thread.is_alive()
