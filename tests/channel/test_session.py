"""The handshake over real mTLS, the key schedule's bindings, nonce uniqueness (property), rekey mid-stream."""

from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest
from channel_helpers import TD, key_pair
from hypothesis import given, settings
from hypothesis import strategies as st

import ztid.crypto.channel as channel_mod
from ztid.crypto import channel_net
from ztid.crypto.channel import Channel, FrameOrderError
from ztid.crypto.session import derive_session
from ztid.enforce import tls
from ztid.errors import PermissionDenied, TransportError, UsageError
from ztid.spiffeid import SpiffeId


def serve_once(listener, source, policy, result: dict, **kw):  # type: ignore[no-untyped-def]
    def run() -> None:
        try:
            ch = channel_net.accept(listener, source=source, policy=policy, **kw)
            result["keys"] = ch.keys
            result["got"] = ch.recv()
            x = np.empty((256, 1024), np.float32)
            ch.recv_into(x)
            result["x"] = x
            ch.send(b"done")
            ch.close()
        except Exception as exc:  # reported to the test thread
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("data", ["tcp", "tls"])
def test_channel_over_authorized_mtls(pki, policy, data: str) -> None:
    server_src = pki.source("/training/job-7/rank-0")
    client_src = pki.source("/training/job-7/rank-1")
    result: dict = {}
    with tls.listen(("127.0.0.1", 0), source=server_src, policy=policy, action="write") as listener:
        t = serve_once(listener, server_src, policy, result, data=data)
        ch = channel_net.connect(listener.address, source=client_src, policy=policy, expect="training", data=data,
                                 context=b"job-7")
        x = np.random.default_rng(1).standard_normal((256, 1024)).astype(np.float32)
        ch.send(b"hello")
        ch.send(x)
        assert ch.recv() == b"done"
        t.join(10)
    assert "error" not in result, result.get("error")
    assert result["got"] == b"hello" and np.array_equal(result["x"], x)
    server_keys = result["keys"]
    # both sides bound the same names, by role; directional keys mirror each other
    assert ch.keys.initiator and not server_keys.initiator
    assert ch.keys.local_id == server_keys.peer_id == SpiffeId.parse(f"spiffe://{TD}/training/job-7/rank-1")
    assert ch.keys.peer_id == server_keys.local_id == SpiffeId.parse(f"spiffe://{TD}/training/job-7/rank-0")
    assert ch.keys.send.key == server_keys.recv.key and ch.keys.recv.key == server_keys.send.key
    assert ch.keys.send.key != ch.keys.recv.key
    assert server_keys.context == b"job-7"
    # a rotated SVID starts a new epoch on the channel; closing stops following the source
    before = ch.send_epoch
    client_src.update(pki.ca.issue(f"spiffe://{TD}/training/job-7/rank-1"), client_src.snapshot().bundles)
    ch.seal(b"after rotation")
    assert ch.send_epoch == before + 1
    ch.close()
    assert ch.on_close == []


def test_inference_client_is_refused_before_any_key(pki, policy) -> None:
    server_src = pki.source("/ns/vision/sa/training")
    client_src = pki.source("/ns/vision/sa/inference")
    result: dict = {}
    with tls.listen(("127.0.0.1", 0), source=server_src, policy=policy, action="write",
                    on_reject=lambda exc, addr: result.setdefault("rejected", exc)) as listener:
        threading.Thread(target=lambda: _accept_quietly(listener, server_src, policy), daemon=True).start()
        with pytest.raises(PermissionDenied, match="inference is explicitly denied access to training"):
            channel_net.connect(listener.address, source=client_src, policy=policy, expect="training")


def _accept_quietly(listener, source, policy) -> None:  # type: ignore[no-untyped-def]
    try:
        channel_net.accept(listener, source=source, policy=policy)
    except Exception:
        pass


def test_a_one_way_permission_is_not_enough_for_a_channel(pki, policy) -> None:
    # pipeline -> training: [read, write] is allowed, so TLS admits the client; training -> pipeline is
    # not, and a channel carries data both ways: both sides refuse before any key exists.
    server_src = pki.source("/training/job-7/rank-0")
    client_src = pki.source("/pipeline/nightly")
    result: dict = {}

    def serve() -> None:
        try:
            channel_net.accept(listener, source=server_src, policy=policy)
        except Exception as exc:
            result["error"] = exc

    with tls.listen(("127.0.0.1", 0), source=server_src, policy=policy, action="write") as listener:
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with pytest.raises(PermissionDenied) as info:
            channel_net.connect(listener.address, source=client_src, policy=policy, expect="training")
        t.join(10)
    assert info.value.decision.allowed is False and "pipeline" in str(info.value)
    assert isinstance(result.get("error"), PermissionDenied), result


def test_foreign_trust_domain_server_is_refused(pki, policy) -> None:
    server_src = pki.source("/ns/vision/sa/training", foreign=True)  # partner.example, trusts both
    client_src = pki.source("/ns/vision/sa/training")  # trusts only ai-platform.example
    with tls.listen(("127.0.0.1", 0), source=server_src, policy=policy, action="write") as listener:
        threading.Thread(target=lambda: _accept_quietly(listener, server_src, policy), daemon=True).start()
        with pytest.raises(TransportError):
            channel_net.connect(listener.address, source=client_src, policy=policy, expect="training")


def test_handshake_needs_a_verified_socket(pki) -> None:
    from ztid.crypto.session import handshake

    a, b = socket.socketpair()
    with pytest.raises(UsageError, match="verified"):
        handshake(a, local_id=SpiffeId.parse(f"spiffe://{TD}/x/y"), initiator=True)
    a.close(), b.close()


def test_keys_are_bound_to_ids_roles_channel_and_context() -> None:
    i, r = SpiffeId.parse(f"spiffe://{TD}/training/a"), SpiffeId.parse(f"spiffe://{TD}/training/b")
    si, sr, cid = os.urandom(32), os.urandom(32), os.urandom(16)
    base = dict(initiator_secret=si, responder_secret=sr, initiator_id=i, responder_id=r, channel_id=cid, initiator=True)
    ref = derive_session(**base)[0].send.key
    variants = [
        {**base, "initiator_id": r, "responder_id": i},
        {**base, "responder_id": SpiffeId.parse(f"spiffe://{TD}/training/c")},
        {**base, "channel_id": os.urandom(16)},
        {**base, "context": b"other"},
        {**base, "initiator_secret": sr, "responder_secret": si},
    ]
    keys = {derive_session(**v)[0].send.key for v in variants}
    assert ref not in keys and len(keys) == len(variants)
    with pytest.raises(UsageError):
        derive_session(**{**base, "initiator_id": str(i)})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        derive_session(**{**base, "channel_id": b"short"})


class _Recorder:
    """Stands in for AESGCM inside the channel module and records every (key, nonce) it encrypts with."""

    log: list[tuple[bytes, bytes]] = []
    real = channel_mod.AESGCM

    def __init__(self, key: bytes) -> None:
        self._key, self._aead = key, _Recorder.real(key)

    def encrypt_into(self, nonce, data, aad, out):  # type: ignore[no-untyped-def]
        _Recorder.log.append((self._key, bytes(nonce)))
        return self._aead.encrypt_into(nonce, data, aad, out)

    def decrypt_into(self, nonce, data, aad, out):  # type: ignore[no-untyped-def]
        return self._aead.decrypt_into(nonce, data, aad, out)


@pytest.fixture(scope="module")
def recording():
    channel_mod.AESGCM = _Recorder  # type: ignore[misc]
    yield _Recorder
    channel_mod.AESGCM = _Recorder.real  # type: ignore[misc]


ops = st.lists(st.one_of(st.integers(0, 3000), st.just("rekey")), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=ops, rekey_after=st.integers(6, 12), parallel=st.booleans())
def test_nonce_never_repeats_under_a_key(recording, ops, rekey_after: int, parallel: bool) -> None:
    recording.log = []
    ki, kr = key_pair()
    a = Channel(ki, segment_size=512, rekey_after=rekey_after, parallel=parallel)
    b = Channel(kr, segment_size=512, rekey_after=rekey_after, parallel=parallel)
    saved, channel_mod._PARALLEL_MIN = channel_mod._PARALLEL_MIN, 0 if parallel else channel_mod._PARALLEL_MIN
    try:  # parallel: every multi-segment message goes through the thread pool
        for op in [*ops, 1]:
            if op == "rekey":
                a.rekey()
                continue
            data = os.urandom(op)
            out = bytearray(op)
            b.open_into(a.seal(data), out)
            assert out == data
    finally:
        channel_mod._PARALLEL_MIN = saved
    assert len(recording.log) == len(set(recording.log))  # no (key, nonce) pair twice
    per_key: dict[bytes, int] = {}
    for key, _ in recording.log:
        per_key[key] = per_key.get(key, 0) + 1
    assert max(per_key.values()) <= rekey_after  # never more AEAD calls under one key than allowed
    assert b.recv_epoch == a.send_epoch


def test_rekey_mid_stream_over_a_socket() -> None:
    ki, kr = key_pair()
    s1, s2 = socket.socketpair()
    a = Channel(ki, sock=s1, segment_size=1 << 14, rekey_after=7)
    b = Channel(kr, sock=s2, segment_size=1 << 14, rekey_after=7)
    epochs = []
    x = np.arange(1 << 15, dtype=np.int32)  # 128 KiB: 8 segments... more than rekey_after allows
    with pytest.raises(UsageError, match="rekey_after"):
        a.send(x)
    for i in range(20):
        msg = os.urandom(1 << 14) * 3  # 3 segments: a new epoch every 2 messages
        t = threading.Thread(target=a.send, args=(msg,))
        t.start()
        got = b.recv()
        t.join()
        assert got == msg
        if i == 10:
            a.rekey()  # on demand, e.g. after an SVID rotation; nothing is torn down
        epochs.append(b.recv_epoch)
    assert epochs == sorted(epochs) and epochs[-1] == a.send_epoch >= 10
    # the keys really changed: a frame sealed under epoch 0's key no longer opens
    s1.close(), s2.close()


def test_old_epoch_frame_after_rekey_is_refused() -> None:
    ki, kr = key_pair()
    a, b = Channel(ki), Channel(kr)
    old = bytes(a.seal(b"epoch 0"))
    b.open_into(old, bytearray(7))
    a.rekey()
    b.open_into(a.seal(b"epoch 1"), bytearray(7))
    with pytest.raises(FrameOrderError):
        b.open_into(old, bytearray(7))


def test_large_tensor_round_trips_through_the_pool() -> None:
    torch = pytest.importorskip("torch")
    ki, kr = key_pair()
    s1, s2 = socket.socketpair()
    a, b = Channel(ki, sock=s1, segment_size=1 << 16), Channel(kr, sock=s2, segment_size=1 << 16)
    for dtype in (torch.float32, torch.bfloat16, torch.int8, torch.bool):
        t = (torch.randn(333, 1001) * 10).to(dtype)
        out = torch.empty_like(t)
        th = threading.Thread(target=a.send, args=(t,))
        th.start()
        b.recv_into(out)
        th.join()
        assert torch.equal(out, t)
    th = threading.Thread(target=a.send, args=(torch.ones(2, 3, dtype=torch.bfloat16),))
    th.start()
    got = b.recv()
    th.join()
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16 and got.shape == (2, 3)
    with pytest.raises(UsageError):
        b.recv_into(torch.empty(4, 4).t())  # not contiguous
    s1.close(), s2.close()
