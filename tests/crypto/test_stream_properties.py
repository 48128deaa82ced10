"""Round-trip properties over random sizes, segment sizes, write chunkings, read sizes and ranges."""

from __future__ import annotations

import io
import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.crypto import stream
from ztid.crypto.random_access import RandomAccessDecryptor

KEY = os.urandom(32)
segment_sizes = st.integers(min_value=57, max_value=700)
payloads = st.binary(max_size=3000)


@settings(max_examples=150, deadline=None)
@given(payloads, segment_sizes, st.binary(max_size=40))
def test_one_shot_round_trip_and_size_formulas(plaintext, segment, ad):
    ciphertext = stream.encrypt(KEY, plaintext, ad, segment_size=segment)
    assert len(ciphertext) == stream.ciphertext_size(len(plaintext), segment_size=segment)
    assert stream.plaintext_size(len(ciphertext), segment_size=segment) == len(plaintext)
    assert stream.decrypt(KEY, ciphertext, ad, segment_size=segment) == plaintext
    out = bytearray(len(plaintext) + 5)
    assert stream.decrypt_into(KEY, ciphertext, ad, out, segment_size=segment) == len(plaintext)
    assert out[: len(plaintext)] == plaintext


@settings(max_examples=100, deadline=None)
@given(payloads, segment_sizes, st.lists(st.integers(min_value=0, max_value=900), max_size=20), st.integers(1, 1000))
def test_writer_chunking_and_reader_read_sizes_do_not_matter(plaintext, segment, cuts, read_size):
    sink = io.BytesIO()
    writer = stream.open_writer(KEY, sink, b"ad", segment_size=segment)
    pos = 0
    for cut in cuts:
        writer.write(plaintext[pos : pos + cut])
        pos += cut
    writer.write(plaintext[pos:])
    writer.close()
    ciphertext = sink.getvalue()
    assert len(ciphertext) == stream.ciphertext_size(len(plaintext), segment_size=segment)
    assert stream.decrypt(KEY, ciphertext, b"ad", segment_size=segment) == plaintext
    reader = stream.open_reader(KEY, io.BytesIO(ciphertext), b"ad", segment_size=segment)
    got = bytearray()
    while chunk := reader.read(read_size):
        got += chunk
    assert got == plaintext


@settings(max_examples=100, deadline=None)
@given(payloads, segment_sizes, st.lists(st.tuples(st.integers(0, 3100), st.integers(0, 3100)), min_size=1, max_size=8))
def test_random_access_ranges_equal_slices(plaintext, segment, ranges):
    ciphertext = stream.encrypt(KEY, plaintext, b"ra", segment_size=segment)
    with tempfile.TemporaryFile() as fh:
        fh.write(b"container header" + ciphertext)
        fh.flush()
        for source, start in ((ciphertext, 0), (io.BytesIO(ciphertext), 0), (fh, 16)):
            ra = RandomAccessDecryptor(KEY, source, b"ra", segment_size=segment, start=start)
            assert ra.size == len(plaintext)
            for offset, length in ranges:
                assert ra.read_range(offset, length) == plaintext[offset : offset + length]
            reader = ra.reader()
            offset = ranges[0][0]
            reader.seek(offset)
            assert reader.read(ranges[0][1]) == plaintext[offset : offset + ranges[0][1]]
            reader.seek(-min(len(plaintext), 7), io.SEEK_END)
            assert reader.read() == plaintext[len(plaintext) - min(len(plaintext), 7) :]


def test_each_encryption_is_randomized():
    a, b = stream.encrypt(KEY, b"same", b""), stream.encrypt(KEY, b"same", b"")
    assert a[1:40] != b[1:40] and a[40:] != b[40:]


def test_accepts_numpy_style_buffers():
    import numpy as np

    array = np.arange(1000, dtype=np.float32)
    ciphertext = stream.encrypt(KEY, array, b"t", segment_size=4096)
    assert np.frombuffer(stream.decrypt(KEY, ciphertext, b"t", segment_size=4096), dtype=np.float32).tolist() == list(
        range(1000)
    )


class _Trickle:
    """A file object with only read(), returning at most 5 bytes a call (like a slow pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        n = 5 if n < 0 else min(n, 5)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


@settings(max_examples=40, deadline=None)
@given(payloads, segment_sizes)
def test_reader_handles_short_reads_and_files_without_readinto(plaintext, segment):
    ciphertext = stream.encrypt(KEY, plaintext, b"p", segment_size=segment)
    assert stream.open_reader(KEY, _Trickle(ciphertext), b"p", segment_size=segment).read() == plaintext
