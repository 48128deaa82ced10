"""The stream bench's raw reference does ztid's AES-GCM work: the same segments at the same offsets.

The bench compares ``stream.encrypt_into``/``decrypt_into`` with raw ``AESGCM`` calls on the same
buffers; that comparison is fair only if the reference's segment table is the stream's own layout.
Nothing here measures time.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bench import bench_stream
from ztid.crypto import stream

SEGMENT = 4096


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 56, SEGMENT - 55, SEGMENT, 3 * SEGMENT + 7, 10 * (SEGMENT - 16)])
def test_the_reference_segments_decrypt_a_ztid_stream(size: int) -> None:
    key, ad = os.urandom(32), b"bench"
    plaintext = os.urandom(size)
    sealed = stream.encrypt(key, plaintext, ad, segment_size=SEGMENT)
    segs = bench_stream._segments(size, SEGMENT)

    # The segments tile the plaintext in order and the last one ends where the stream ends.
    assert [s for s, _, _, _ in segs] == [0, *(e for _, e, _, _ in segs[:-1])]
    assert segs[-1][1] == size
    start, end, at, _ = segs[-1]
    assert at + end - start + bench_stream.TAG == len(sealed) == stream.ciphertext_size(size, segment_size=SEGMENT)

    # Raw AES-GCM at those offsets, with the key and nonce prefix the header derives, opens every segment.
    aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=sealed[1:33], info=ad).derive(key))
    out = bytearray(size)
    view = memoryview(out)
    for start, end, at, tail in segs:
        aead.decrypt_into(sealed[33:40] + tail, sealed[at : at + end - start + bench_stream.TAG], None,
                          view[start:end])
    assert out == plaintext


def test_the_bench_runs_small_and_reports_every_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    results = bench_stream.main(total=8 << 20, segment=1 << 16)  # raises if reference and ztid disagree
    for name in ("encrypt_threads2", "raw_encrypt_2threads", "decrypt_threads2_vs_raw_2threads",
                 "raw_2threads_inplace", "raw_2threads_cached"):
        assert results[f"ratio_{name}"] > 0
    assert "target >= 1.80" in capsys.readouterr().out
