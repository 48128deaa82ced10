"""Sealed files: round trip, strict header parsing (fuzzed), tampering, impersonation, rewrap."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.crypto import keys, sealed, stream
from ztid.crypto.sealed import SealedHeader, open_sealed, parse_header, read_header, rewrap_file, seal_file
from ztid.errors import CryptoError, DecryptionError, KeyringError, SealedFormatError, UsageError

SEG = 4096


@pytest.fixture
def ring(tmp_path):
    return keys.Keyring.create(tmp_path / "ring.json")


@pytest.fixture
def sealed_file(tmp_path, ring):
    plaintext = os.urandom(3 * SEG + 123)
    src, dst = tmp_path / "shard.bin", tmp_path / "shard.ztid"
    src.write_bytes(plaintext)
    dek = keys.new_data_key()
    version, wrapped = ring.wrap("default", dek, context=keys.dek_context("imagenet"))
    header = seal_file(src, dst, data_key=dek, wrapped_key=wrapped, dataset="imagenet", name="train/shard-1.bin",
                       key_id="default", key_version=version, segment_size=SEG)
    return plaintext, dst, dek, header


def test_round_trip_and_header(sealed_file):
    plaintext, path, dek, header = sealed_file
    data = path.read_bytes()
    assert data[:4] == b"ZTID" and data[4] == 1 and struct.unpack(">I", data[5:9])[0] == header.length
    with open(path, "rb") as f:
        assert read_header(f) == header and f.tell() == header.length
    with open_sealed(path, dek, dataset="imagenet", name="train/shard-1.bin") as reader:
        assert reader.read() == plaintext
        reader.seek(SEG - 10)
        assert reader.read(30) == plaintext[SEG - 10 : SEG + 20]
    # the stream part is plain Tink format under the header's associated data
    assert stream.decrypt(dek, data[header.length :], header.associated_data(), segment_size=SEG) == plaintext


def test_header_fields_are_authenticated(sealed_file):
    plaintext, path, dek, header = sealed_file
    data = path.read_bytes()
    stream_part = data[header.length :]
    for change in ({"dataset": "cifar"}, {"name": "train/shard-2.bin"}, {"key_id": "other"}):
        forged = SealedHeader.new(**{**header._fields(), **change})
        path.write_bytes(forged.to_bytes() + stream_part)
        with pytest.raises(DecryptionError):
            open_sealed(path, dek)
    forged = SealedHeader.new(**{**header._fields(), "segment_size": SEG * 2})
    path.write_bytes(forged.to_bytes() + stream_part)
    with pytest.raises(DecryptionError):
        open_sealed(path, dek)


def test_a_sealed_file_cannot_pass_as_another(sealed_file):
    _, path, dek, _ = sealed_file
    with pytest.raises(CryptoError, match="expected 'train/shard-9.bin'") as info:
        open_sealed(path, dek, name="train/shard-9.bin")
    assert not isinstance(info.value, DecryptionError)
    with pytest.raises(CryptoError, match="dataset"):
        open_sealed(path, dek, dataset="cifar")


def test_tampered_or_truncated_stream_and_wrong_key(sealed_file):
    _, path, dek, header = sealed_file
    data = path.read_bytes()
    for cut in (len(data) - 1, header.length + SEG, header.length + 40):
        path.write_bytes(data[:cut])
        with pytest.raises(DecryptionError):
            open_sealed(path, dek).read()
    flipped = bytearray(data)
    flipped[header.length + 100] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(DecryptionError):
        open_sealed(path, dek).read()
    path.write_bytes(data)
    with pytest.raises(DecryptionError):
        open_sealed(path, os.urandom(32))


def test_rewrap_changes_only_the_header(sealed_file, ring):
    plaintext, path, dek, header = sealed_file
    before = path.read_bytes()
    assert rewrap_file(path, ring) == header  # already at the newest version: nothing to do
    assert path.read_bytes() == before
    ring.rotate("default")
    new = rewrap_file(path, ring)
    after = path.read_bytes()
    assert new.key_version == 2 and new.wrapped_key != header.wrapped_key
    assert after[new.length :] == before[header.length :]  # stream bytes untouched
    ring.set_min_decrypt_version("default", 2)
    unwrapped = ring.unwrap("default", new.key_version, new.wrapped_key, context=keys.dek_context("imagenet"))
    assert unwrapped == dek
    assert open_sealed(path, unwrapped).read() == plaintext


def test_fields_are_validated_with_named_rules():
    good = dict(dataset="ds", name="a/b.bin", key_id="k", key_version=1, wrapped_key=b"w", segment_size=SEG)
    bad_values = [
        ("dataset", ""), ("dataset", "a/b"), ("dataset", "x" * 256), ("dataset", ".."), ("name", "/abs"),
        ("name", "a/../b"), ("name", "a//b"), ("name", "a\\b"), ("name", "a\nb"), ("name", ""), ("name", "./a"),
        ("name", "é" * 600), ("key_id", "k k"), ("key_version", 0), ("key_version", 2**32), ("key_version", True),
        ("wrapped_key", b""), ("wrapped_key", b"x" * 4097), ("wrapped_key", "str"), ("segment_size", 56),
    ]
    for field, value in bad_values:
        with pytest.raises(CryptoError, match=field if field != "segment_size" else "segment_size"):
            SealedHeader.new(**{**good, field: value})
    assert parse_header(SealedHeader.new(**good).to_bytes()) == SealedHeader.new(**good)


def test_strict_parsing_messages():
    header = SealedHeader.new(dataset="ds", name="n", key_id="k", key_version=3, wrapped_key=b"w" * 60,
                              segment_size=SEG).to_bytes()
    cases = {
        b"ZTIE" + header[4:]: "magic",
        header[:4] + b"\x02" + header[5:]: "unsupported version 2",
        header + b"\0": "header_len says",
        header[:-1]: "header_len says",
        header[:5] + struct.pack(">I", len(header) + 1) + header[9:] + b"\0": "unexpected bytes",
        header[:10]: "shorter than the fixed part",
    }
    for data, message in cases.items():
        with pytest.raises(CryptoError, match=message):
            parse_header(data)
    with pytest.raises(CryptoError, match="file ends inside"):
        read_header(io.BytesIO(header[:-1]))
    with pytest.raises(CryptoError, match="outside"):
        read_header(io.BytesIO(header[:5] + struct.pack(">I", 1 << 20) + header[9:]))
    with pytest.raises(CryptoError, match="not UTF-8"):
        bad = header.replace(b"\x00\x02ds", b"\x00\x02\xff\xfe")
        parse_header(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_raise_crypto_errors(data):
    for candidate in (data, b"ZTID\x01" + data):
        try:
            parse_header(candidate)
        except CryptoError as exc:
            assert type(exc) is SealedFormatError and str(exc).startswith("sealed header:")
        try:
            read_header(io.BytesIO(candidate))
        except CryptoError as exc:
            assert type(exc) is SealedFormatError


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_headers(data):
    header = SealedHeader.new(dataset="imagenet", name="train/x.bin", key_id="default", key_version=7,
                              wrapped_key=bytes(60), segment_size=SEG).to_bytes()
    mutated = bytearray(header)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(header) - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_header(bytes(mutated))
    except CryptoError:
        return
    assert parsed.to_bytes() == bytes(mutated)  # anything accepted re-encodes to the same bytes


@settings(max_examples=100, deadline=None)
@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True).filter(lambda s: s not in (".", "..")),
    st.lists(st.from_regex(r"[a-z0-9_ é-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", "..")),
             min_size=1, max_size=5),
    st.integers(1, 2**32 - 1),
    st.binary(min_size=1, max_size=300),
    st.integers(57, 2**31 - 1),
)
def test_header_round_trip_property(dataset, parts, version, wrapped, segment):
    header = SealedHeader.new(dataset=dataset, name="/".join(parts), key_id="k", key_version=version,
                              wrapped_key=wrapped, segment_size=segment)
    assert parse_header(header.to_bytes()) == header
    assert read_header(io.BytesIO(header.to_bytes() + b"stream...")) == header


def test_unreadable_paths_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        open_sealed(tmp_path / "missing.ztid", bytes(32))
    with pytest.raises(UsageError):
        seal_file(tmp_path / "missing", tmp_path / "out", data_key=bytes(32), wrapped_key=b"w", dataset="d",
                  name="n", key_id="k", key_version=1)
    with pytest.raises(KeyringError):
        seal_file(tmp_path / "missing", tmp_path / "out", data_key=b"short", wrapped_key=b"w", dataset="d",
                  name="n", key_id="k", key_version=1)
    assert not (tmp_path / "out").exists() and sealed.MAGIC == b"ZTID"


def test_rewrap_keeps_the_file_mode(sealed_file, ring):
    _, path, _, _ = sealed_file
    os.chmod(path, 0o640)
    ring.rotate("default")
    assert rewrap_file(path, ring).key_version == 2
    assert path.stat().st_mode & 0o777 == 0o640
