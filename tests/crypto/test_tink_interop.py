"""Tink (tink 1.16, C++ core) and ztid read each other's streams, around every segment boundary."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tink import TinkError

from ztid.crypto import stream
from ztid.crypto.random_access import RandomAccessDecryptor
from ztid.errors import DecryptionError


def boundary_sizes(segment: int) -> list[int]:
    first, full = segment - 56, segment - 16
    return [0, 1, first - 1, first, first + 1, first + full, first + full + 1, first + 4 * full + 17]


@pytest.mark.parametrize("segment", [4096, 1 << 20, 100])
def test_both_directions_across_boundaries(tink, key, segment):
    primitive = tink.primitive(key, segment)
    ad = b"dataset=imagenet;shard=7"
    for size in boundary_sizes(segment):
        plaintext = os.urandom(size)
        ours = stream.encrypt(key, plaintext, ad, segment_size=segment)
        assert tink.decrypt(primitive, ours, ad) == plaintext, size
        theirs = tink.encrypt(primitive, plaintext, ad)
        assert len(theirs) == len(ours) == stream.ciphertext_size(size, segment_size=segment)
        assert stream.decrypt(key, theirs, ad, segment_size=segment) == plaintext, size
        assert stream.open_reader(key, io.BytesIO(theirs), ad, segment_size=segment).read() == plaintext
        ra = RandomAccessDecryptor(key, theirs, ad, segment_size=segment)
        assert ra.size == size and ra.read_range(size // 3, size) == plaintext[size // 3 :]


def test_writer_output_is_read_by_tink(tink, key):
    primitive = tink.primitive(key, 4096)
    plaintext = os.urandom(50_000)
    sink = io.BytesIO()
    with stream.open_writer(key, sink, b"ad", segment_size=4096) as writer:
        for i in range(0, len(plaintext), 999):
            writer.write(plaintext[i : i + 999])
    assert tink.decrypt(primitive, sink.getvalue(), b"ad") == plaintext


def test_tink_output_has_no_prefix_and_a_40_byte_header(tink, key):
    ciphertext = tink.encrypt(tink.primitive(key, 4096), b"x" * 10, b"")
    assert ciphertext[0] == 40 and len(ciphertext) == 40 + 10 + 16


def test_wrong_associated_data_fails_on_both_sides(tink, key):
    primitive = tink.primitive(key, 4096)
    ours = stream.encrypt(key, b"secret", b"a")
    with pytest.raises(TinkError):
        tink.decrypt(tink.primitive(key, 1 << 20), ours, b"b")
    with pytest.raises(DecryptionError, match="^decryption failed$"):
        stream.decrypt(key, tink.encrypt(primitive, b"secret", b"a"), b"b", segment_size=4096)


def test_an_empty_final_segment_is_accepted_by_both(tink, key):
    """Tink never writes one but reads one; so does ztid, so the two accept the same set of streams."""
    segment, salt, prefix = 100, os.urandom(32), os.urandom(7)
    aead = AESGCM(HKDF(hashes.SHA256(), 32, salt, b"ad").derive(key))
    body = os.urandom(segment - 56)
    crafted = (
        bytes([40]) + salt + prefix
        + aead.encrypt(prefix + struct.pack(">IB", 0, 0), body, None)
        + aead.encrypt(prefix + struct.pack(">IB", 1, 1), b"", None)
    )
    assert tink.decrypt(tink.primitive(key, segment), crafted, b"ad") == body
    assert stream.decrypt(key, crafted, b"ad", segment_size=segment) == body
    assert RandomAccessDecryptor(key, crafted, b"ad", segment_size=segment).read_range(0, 999) == body



_TINK_KEY = os.urandom(32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2500), st.sampled_from([57, 64, 100, 333, 1024]), st.binary(max_size=20))
def test_random_sizes_both_directions(tink, plaintext, segment, ad):
    primitive = tink.primitive(_TINK_KEY, segment)
    assert tink.decrypt(primitive, stream.encrypt(_TINK_KEY, plaintext, ad, segment_size=segment), ad) == plaintext
    theirs = tink.encrypt(primitive, plaintext, ad)
    assert stream.decrypt(_TINK_KEY, theirs, ad, segment_size=segment) == plaintext
