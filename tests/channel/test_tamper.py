"""Every tampering case on the channel: altered, replayed, reordered, dropped, truncated, foreign and
reflected frames are detected, the caller's buffer is wiped, and the channel stays closed."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
from channel_helpers import key_pair

from ztid.crypto.channel import Channel, ChannelClosed, FrameOrderError, TruncatedError
from ztid.crypto.channel_frame import HEADER
from ztid.errors import CryptoError, DecryptionError

SEG = 1 << 12


def pair(**kw):
    ki, kr = key_pair()
    return Channel(ki, segment_size=SEG, **kw), Channel(kr, segment_size=SEG, **kw)


def frames(sender: Channel, *payloads: bytes) -> list[bytes]:
    return [bytes(sender.seal(p)) for p in payloads]


def assert_closed(ch: Channel, frame: bytes) -> None:
    with pytest.raises(ChannelClosed):
        ch.open_into(frame, bytearray(1 << 16))


PAYLOAD = bytes(range(256)) * 40  # 10 KiB: three segments


def test_round_trip_then_untouched_frames_still_flow() -> None:
    a, b = pair()
    out = bytearray(len(PAYLOAD))
    for f in frames(a, PAYLOAD, b"", PAYLOAD[:7]):
        n = b.open_into(f, out)
        assert bytes(out[:n]) in (PAYLOAD, b"", PAYLOAD[:7])


@pytest.mark.parametrize("where", ["magic", "kind", "epoch", "counter", "length", "segment_size", "first_ct", "middle_ct", "last_tag"])
def test_any_flipped_bit_is_detected_and_wipes_the_buffer(where: str) -> None:
    a, b = pair()
    (good,) = frames(a, PAYLOAD)
    offsets = {"magic": 0, "kind": 4, "epoch": 11, "counter": 19, "length": 27, "segment_size": 31,
               "first_ct": HEADER.size + 3, "middle_ct": HEADER.size + SEG + 16 + 100, "last_tag": len(good) - 1}
    bad = bytearray(good)
    bad[offsets[where]] ^= 0x01
    out = bytearray(b"\xaa" * len(PAYLOAD))
    with pytest.raises(DecryptionError):
        b.open_into(bytes(bad), out)
    assert out == bytearray(b"\xaa" * len(PAYLOAD)) or out == bytearray(len(PAYLOAD))  # never partial plaintext
    assert PAYLOAD[:64] not in out
    assert_closed(b, good)


def test_replayed_frame() -> None:
    a, b = pair()
    f1, _ = frames(a, b"one", b"two")
    b.open_into(f1, bytearray(3))
    with pytest.raises(FrameOrderError, match="expected frame counter 1"):
        b.open_into(f1, bytearray(3))
    assert_closed(b, f1)


def test_reordered_frames() -> None:
    a, b = pair()
    f1, f2 = frames(a, b"one", b"two")
    with pytest.raises(FrameOrderError):
        b.open_into(f2, bytearray(3))


def test_dropped_frame() -> None:
    a, b = pair()
    f1, f2, f3 = frames(a, b"one", b"two", b"three")
    b.open_into(f1, bytearray(3))
    with pytest.raises(FrameOrderError):
        b.open_into(f3, bytearray(5))


def test_truncated_frame_and_dropped_last_segment() -> None:
    a, b = pair()
    (f,) = frames(a, PAYLOAD)
    with pytest.raises(TruncatedError):
        b.open_into(f[:-1], bytearray(len(PAYLOAD)))
    a, b = pair()
    (f,) = frames(a, PAYLOAD)
    # drop the last segment and shrink the length field to match: the header is in every segment's AAD
    nseg_keep = 2
    hdr = bytearray(f[: HEADER.size])
    struct.pack_into(">Q", hdr, 20, nseg_keep * SEG)
    cut = bytes(hdr) + f[HEADER.size : HEADER.size + nseg_keep * (SEG + 16)]
    with pytest.raises(DecryptionError):
        b.open_into(cut, bytearray(len(PAYLOAD)))


def test_spliced_segments_are_detected() -> None:
    a, b = pair()
    (f,) = frames(a, PAYLOAD)
    s0 = slice(HEADER.size, HEADER.size + SEG + 16)
    s1 = slice(HEADER.size + SEG + 16, HEADER.size + 2 * (SEG + 16))
    swapped = f[: HEADER.size] + f[s1] + f[s0] + f[s1.stop :]
    with pytest.raises(DecryptionError):
        b.open_into(swapped, bytearray(len(PAYLOAD)))


def test_frame_from_another_channel() -> None:
    a, _ = pair()
    _, b = pair()  # same counters, same IDs, other session's secrets
    (f,) = frames(a, b"hello")
    with pytest.raises(DecryptionError):
        b.open_into(f, bytearray(5))


def test_frame_reflected_back_to_its_sender() -> None:
    a, b = pair()
    (f,) = frames(a, b"hello")  # a -> b, counter 0, epoch 0
    with pytest.raises(DecryptionError):
        a.open_into(f, bytearray(5))  # a's receive key is the other direction's


def test_forged_epoch_jump() -> None:
    a, b = pair()
    (f,) = frames(a, b"hello")
    bad = bytearray(f)
    struct.pack_into(">I", bad, 8, 2)
    with pytest.raises(FrameOrderError, match="epoch 2"):
        b.open_into(bytes(bad), bytearray(5))


def test_tensor_metadata_is_authenticated() -> None:
    a, b = pair()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = bytes(a.seal(x))
    bad = f.replace(b"float32|3,4", b"float32|4,3")
    with pytest.raises(DecryptionError):
        b.open_into(bad, np.empty((4, 3), np.float32))
    a, b = pair()
    f = bytes(a.seal(x))
    bad = f.replace(b"float32|3,4", b"int32|3,4\x00\x00")[: len(f)]
    with pytest.raises(CryptoError):
        b.open_into(bad, np.empty((3, 4), np.int32))


def test_receiver_shape_mismatch_closes_the_channel() -> None:
    a, b = pair()
    f = bytes(a.seal(np.zeros((3, 4), np.float32)))
    with pytest.raises(CryptoError, match="does not match"):
        b.open_into(f, np.empty((4, 3), np.float32))
    assert_closed(b, f)


def test_stream_cut_mid_frame_over_a_socket() -> None:
    ki, kr = key_pair()
    s1, s2 = socket.socketpair()
    a, b = Channel(ki, segment_size=SEG), Channel(kr, sock=s2, segment_size=SEG)
    f = bytes(a.seal(PAYLOAD))
    s1.sendall(f[: len(f) // 2])
    s1.close()
    out = bytearray(len(PAYLOAD))
    with pytest.raises(TruncatedError, match="stream ended inside a frame"):
        b.recv_into(out)
    assert out == bytearray(len(PAYLOAD))  # segments that verified were wiped too
    with pytest.raises(ChannelClosed):
        b.recv_into(out)


def test_replay_over_a_socket() -> None:
    ki, kr = key_pair()
    s1, s2 = socket.socketpair()
    a, b = Channel(ki, segment_size=SEG), Channel(kr, sock=s2, segment_size=SEG)
    f = bytes(a.seal(b"pay 100"))
    s1.sendall(f + f)
    assert b.recv() == b"pay 100"
    with pytest.raises(FrameOrderError):
        b.recv()
    s1.close()


def test_closed_channel_refuses_to_send() -> None:
    a, _ = pair()
    a.close()
    with pytest.raises(ChannelClosed):
        a.seal(b"x")
