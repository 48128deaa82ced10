"""Every way to tamper with a stream ends in one opaque DecryptionError, from every reading API."""

from __future__ import annotations

import io
import os
import struct

import pytest

from ztid.crypto import _format, stream
from ztid.crypto._format import HEADER_SIZE, Layout, SegmentCipher, build_header
from ztid.crypto.random_access import RandomAccessDecryptor
from ztid.errors import DecryptionError, KeyringError, UsageError

SEG = 64  # segment 0 carries 8 plaintext bytes, later segments 48
AD = b"tensor=layer3.weight;rank=2"


def read_everything(key: bytes, ciphertext: bytes, ad: bytes = AD, segment: int = SEG) -> list[str]:
    """Try all three readers; return the names of those that did NOT raise DecryptionError."""
    accepted = []
    for name, attempt in (
        ("decrypt", lambda: stream.decrypt(key, ciphertext, ad, segment_size=segment)),
        ("reader", lambda: stream.open_reader(key, io.BytesIO(ciphertext), ad, segment_size=segment).read()),
        ("random", lambda: RandomAccessDecryptor(key, ciphertext, ad, segment_size=segment).read_range(0, 1 << 20)),
    ):
        try:
            attempt()
        except DecryptionError as exc:
            assert str(exc) == "decryption failed"
        else:
            accepted.append(name)
    return accepted


def segments(ciphertext: bytes, segment: int = SEG) -> list[bytes]:
    later = [ciphertext[i : i + segment] for i in range(segment, len(ciphertext), segment)]
    return [ciphertext[HEADER_SIZE:segment], *later]


@pytest.fixture
def sample(key):
    plaintext = os.urandom(8 + 48 * 4 + 20)  # 6 segments, the last one short
    return plaintext, stream.encrypt(key, plaintext, AD, segment_size=SEG)


def test_untampered_stream_is_accepted_everywhere(key, sample):
    assert read_everything(key, sample[1]) == ["decrypt", "reader", "random"]


def test_truncation_at_every_length(key, sample):
    ciphertext = sample[1]
    for cut in range(len(ciphertext)):
        assert read_everything(key, ciphertext[:cut]) == [], cut


def test_truncation_at_every_segment_boundary_even_with_a_fresh_empty_last_segment(key, sample):
    """Dropping the tail and appending a forged 'last' segment needs the key; without it nothing passes."""
    ciphertext = sample[1]
    for boundary in range(SEG, len(ciphertext), SEG):
        assert read_everything(key, ciphertext[:boundary]) == []
        assert read_everything(key, ciphertext[:boundary] + ciphertext[-16:]) == []


def test_every_single_bit_flip_is_detected(key, sample):
    ciphertext = bytearray(sample[1])
    for i in range(len(ciphertext)):
        for bit in (0x01, 0x80):
            ciphertext[i] ^= bit
            assert read_everything(key, bytes(ciphertext)) == [], i
            ciphertext[i] ^= bit


def test_reordered_segments(key, sample):
    segs = segments(sample[1])
    swapped = sample[1][:HEADER_SIZE] + segs[0] + segs[2] + segs[1] + b"".join(segs[3:])
    assert read_everything(key, swapped) == []


def test_duplicated_segment(key, sample):
    segs = segments(sample[1])
    doubled = sample[1][:HEADER_SIZE] + segs[0] + segs[1] + segs[1] + b"".join(segs[2:])
    assert read_everything(key, doubled) == []


def test_dropped_middle_segment(key, sample):
    segs = segments(sample[1])
    assert read_everything(key, sample[1][:HEADER_SIZE] + segs[0] + b"".join(segs[2:])) == []


def test_splice_between_two_streams_with_the_same_key_and_ad(key, sample):
    other = stream.encrypt(key, os.urandom(len(sample[0])), AD, segment_size=SEG)
    mine, theirs = segments(sample[1]), segments(other)
    for i in range(len(mine)):
        spliced = mine[:i] + [theirs[i]] + mine[i + 1 :]
        assert read_everything(key, sample[1][:HEADER_SIZE] + b"".join(spliced)) == [], i
    assert read_everything(key, other[:HEADER_SIZE] + sample[1][HEADER_SIZE:]) == []


def _crafted(key: bytes, pieces: list[bytes], flags: list[int], indexes: list[int] | None = None) -> bytes:
    """A stream whose segments carry chosen last-flags (and indexes) under the right key."""
    salt, prefix = os.urandom(32), os.urandom(7)
    cipher = SegmentCipher(key, salt, prefix, AD)
    out = bytearray(build_header(salt, prefix))
    for i, (piece, flag) in enumerate(zip(pieces, flags)):
        buf = bytearray(len(piece) + 16)
        cipher.seal_into(indexes[i] if indexes else i, bool(flag), memoryview(piece), memoryview(buf))
        out += buf
    return bytes(out)


def test_flipped_last_segment_flags(key):
    pieces = [os.urandom(8), os.urandom(48), os.urandom(30)]
    assert read_everything(key, _crafted(key, pieces, [0, 0, 1])) == ["decrypt", "reader", "random"]  # control
    assert read_everything(key, _crafted(key, pieces, [0, 0, 0])) == []  # no last flag at all
    assert read_everything(key, _crafted(key, pieces, [0, 1, 1])) == []  # a middle segment claims to be last
    assert read_everything(key, _crafted(key, pieces, [1, 0, 1])) == []
    assert read_everything(key, _crafted(key, pieces, [0, 0, 1], indexes=[0, 2, 1])) == []  # wrong positions


def test_wrong_associated_data_key_and_segment_size(key, sample):
    ciphertext = sample[1]
    assert read_everything(key, ciphertext, ad=AD + b"x") == []
    assert read_everything(key, ciphertext, ad=b"") == []
    assert read_everything(os.urandom(32), ciphertext) == []
    assert read_everything(key + b"\0", ciphertext) == []  # HKDF input keys differ
    assert read_everything(key, ciphertext, segment=SEG + 1) == []


def test_header_tampering(key, sample):
    ciphertext = sample[1]
    for i in range(HEADER_SIZE):
        tampered = bytearray(ciphertext)
        tampered[i] ^= 0x40
        assert read_everything(key, bytes(tampered)) == [], i
    assert read_everything(key, bytes([24]) + ciphertext[1:]) == []  # an AES-128 header length


def test_trailing_garbage_is_rejected(key, sample):
    assert read_everything(key, sample[1] + b"\0") == []
    assert read_everything(key, sample[1] + sample[1][-SEG:]) == []


def test_failed_segment_leaves_no_plaintext_in_caller_buffers(key):
    plaintext = b"\xaa" * (8 + 48 + 40)
    ciphertext = bytearray(stream.encrypt(key, plaintext, AD, segment_size=SEG))
    ciphertext[-1] ^= 1  # last segment's tag
    out = bytearray(len(plaintext))
    with pytest.raises(DecryptionError):
        stream.decrypt_into(key, ciphertext, AD, out, segment_size=SEG)
    assert out == bytes(len(out))  # even the verified segments are wiped: the message as a whole failed
    reader = stream.open_reader(key, io.BytesIO(bytes(ciphertext)), AD, segment_size=SEG)
    assert reader.read(8) == plaintext[:8] and reader.read(48) == plaintext[8:56]  # verified segments
    buf = bytearray(b"\x55" * 100)
    with pytest.raises(DecryptionError):
        reader.readinto(buf)
    assert b"\xaa" not in buf
    with pytest.raises(DecryptionError):  # and it stays failed
        reader.read(1)


def test_random_access_rejects_truncation_on_open_not_at_the_end(key, sample):
    ciphertext = sample[1]
    with pytest.raises(DecryptionError):
        RandomAccessDecryptor(key, ciphertext[: 3 * SEG], AD, segment_size=SEG)


def test_segment_count_is_capped_below_2_to_the_32(monkeypatch, key):
    layout = Layout.of(57)
    with pytest.raises(UsageError, match="segments"):
        layout.segments_for(2**32 * 41)
    with pytest.raises(DecryptionError):
        layout.segments_in(57 * 2**32)
    monkeypatch.setattr(_format, "_MAX_SEGMENTS", 3)
    with pytest.raises(UsageError):
        stream.encrypt(key, os.urandom(8 + 48 * 3), AD, segment_size=SEG)  # 4 segments
    writer = stream.open_writer(key, io.BytesIO(), AD, segment_size=SEG)
    with pytest.raises(UsageError):
        writer.write(os.urandom(8 + 48 * 3 + 1))
    assert stream.encrypt(key, os.urandom(8 + 48 * 2), AD, segment_size=SEG)  # 3 segments still fine
    with pytest.raises(DecryptionError):
        stream.decrypt(key, bytes(4 * SEG), AD, segment_size=SEG)


def test_nonce_layout(key):
    cipher = SegmentCipher(key, bytes(32), b"PREFIX7", b"")
    assert cipher.nonce(0x01020304, True) == b"PREFIX7" + struct.pack(">I", 0x01020304) + b"\x01"
    assert cipher.nonce(5, False)[-1] == 0


@pytest.mark.parametrize("bad", [b"short", "x" * 32, 32, None, bytes(31)])
def test_bad_keys_are_keyring_errors(bad):
    with pytest.raises(KeyringError):
        stream.encrypt(bad, b"x", b"")


@pytest.mark.parametrize("segment", [56, 0, -1, 2**31, True, 4096.0, "4096"])
def test_bad_segment_sizes_are_usage_errors(key, segment):
    with pytest.raises(UsageError):
        stream.encrypt(key, b"x", b"", segment_size=segment)


def test_bad_inputs_are_usage_errors(key):
    with pytest.raises(UsageError):
        stream.encrypt(key, "text", b"")
    with pytest.raises(UsageError):
        stream.encrypt(key, b"x", None)
    with pytest.raises(UsageError):
        stream.encrypt(key, memoryview(bytes(100))[::2], b"")
    with pytest.raises(UsageError):
        stream.encrypt_into(key, b"x" * 10, b"", bytearray(10))
    with pytest.raises(UsageError):
        stream.decrypt_into(key, stream.encrypt(key, b"x" * 10, b""), b"", bytearray(9))


def test_writer_aborts_instead_of_finalizing_on_error_or_when_dropped(key):
    sink = io.BytesIO()
    try:
        with stream.open_writer(key, sink, AD, segment_size=SEG) as writer:
            writer.write(os.urandom(200))
            raise RuntimeError("producer crashed")
    except RuntimeError:
        pass
    assert writer.closed
    assert read_everything(key, sink.getvalue()) == []  # a half-written stream never decrypts
    dropped = io.BytesIO()
    writer = stream.open_writer(key, dropped, AD, segment_size=SEG)
    writer.write(os.urandom(100))
    del writer
    assert read_everything(key, dropped.getvalue()) == []
    closed = io.BytesIO()
    with stream.open_writer(key, closed, AD, segment_size=SEG) as writer:
        writer.write(b"abc")
    assert stream.decrypt(key, closed.getvalue(), AD, segment_size=SEG) == b"abc"


def test_reader_refuses_a_segment_index_past_the_cap(monkeypatch, key):
    ciphertext = stream.encrypt(key, os.urandom(8 + 48 * 3), AD, segment_size=SEG)  # 4 segments
    monkeypatch.setattr(_format, "_MAX_SEGMENTS", 3)
    reader = stream.open_reader(key, io.BytesIO(ciphertext), AD, segment_size=SEG)
    with pytest.raises(DecryptionError):
        reader.read()
