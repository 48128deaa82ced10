"""Fuzzing every parser of the channel area: frames, mutated frames, handshake hellos, rank announcements.
Hostile input gives a typed ztid error (and closes the channel), never another exception or plaintext."""

from __future__ import annotations

import queue
import socket
import threading

import pytest
from channel_helpers import TD, key_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.crypto.channel import Channel, ChannelClosed
from ztid.crypto.session import _read_hello
from ztid.distributed.group import _parse_announce
from ztid.errors import DecryptionError, TransportError
from ztid.spiffeid import SpiffeId

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_are_never_a_frame(data: bytes) -> None:
    _, b = key_pair()
    ch = Channel(b, segment_size=64)
    out = bytearray(1024)
    with pytest.raises(DecryptionError):
        ch.open_into(data, out)
    assert out == bytearray(1024)


@FUZZ
@given(payload=st.binary(max_size=400), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_mutated_frames_fail_closed(payload: bytes, flips, cut) -> None:  # type: ignore[no-untyped-def]
    a, b = key_pair()
    sender, receiver = Channel(a, segment_size=64), Channel(b, segment_size=64)
    frame = bytearray(sender.seal(payload))
    for pos, xor in flips:
        frame[pos % len(frame)] ^= xor
    if cut is not None:
        frame = frame[: cut % (len(frame) + 1)]
    out = bytearray(len(payload) + 64)
    try:
        n = receiver.open_into(bytes(frame), out)
    except DecryptionError:
        with pytest.raises(ChannelClosed):
            receiver.open_into(bytes(frame), out)
        assert out == bytearray(len(out))  # nothing unverified left behind
        return
    # only a mutation that changed nothing observable may pass: then the plaintext is intact
    assert bytes(out[:n]) == payload


@FUZZ
@given(data=st.binary(max_size=200))
def test_handshake_hello_parser(data: bytes) -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        try:
            cid, secret, ctx = _read_hello(b, 1)
        except TransportError:
            return
        assert len(cid) == 16 and len(secret) == 32 and data.startswith(b"ZTH1\x01")
    finally:
        a.close(), b.close()


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=120).map(str.encode))
def test_rank_announcement_parser(data: bytes) -> None:
    try:
        address, sid, nonce = _parse_announce(data, 3)
    except TransportError as exc:
        assert "rank 3" in str(exc)
        return
    assert isinstance(sid, SpiffeId) and 0 < address[1] < 65536 and isinstance(nonce, bytes)


def test_channel_over_caller_supplied_send_and_recv() -> None:
    """Any send/recv pair works: here a thread-safe queue of byte chunks standing in for a transport."""
    ki, kr = key_pair()
    pipe: queue.Queue[bytes] = queue.Queue()
    pending = bytearray()

    def recv_into(view: memoryview) -> int:
        if not pending:
            pending.extend(pipe.get(timeout=10))
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        del pending[:n]
        return n

    a = Channel(ki, send=lambda data: pipe.put(bytes(data)), segment_size=1 << 12)
    b = Channel(kr, recv_into=recv_into, segment_size=1 << 12)
    msgs = [b"", b"x", bytes(range(256)) * 100, b"y" * (1 << 18)]
    t = threading.Thread(target=lambda: [a.send(m) for m in msgs])
    t.start()
    got = [b.recv() for _ in msgs]
    t.join()
    assert got == msgs
    assert str(b.keys.peer_id) == f"spiffe://{TD}/ns/vision/sa/training"


def test_a_failing_caller_transport_is_a_transport_error_and_closes_the_channel() -> None:
    ki, kr = key_pair()

    def broken_send(data) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("link down")

    def broken_recv(view: memoryview) -> int:
        raise RuntimeError("link down")

    a = Channel(ki, send=broken_send)
    with pytest.raises(TransportError, match="RuntimeError: link down"):
        a.send(b"x")
    with pytest.raises(ChannelClosed):
        a.send(b"x")
    b = Channel(kr, recv_into=broken_recv)
    with pytest.raises(TransportError, match="link down"):
        b.recv()
    with pytest.raises(ChannelClosed):
        b.recv()
