"""Golden vectors pin the stream bytes; an independent spelling of the Tink spec and Tink itself agree."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ztid.crypto import stream
from ztid.crypto.stream import _encrypt_with

KEY = bytes(range(32))
SALT = bytes(range(100, 132))
PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
PLAINTEXT = bytes(i % 251 for i in range(200))
AD = b"ztid golden"
SEGMENT = 64  # segment 0: 8 plaintext bytes; later ones 48; 200 bytes -> 5 segments

GOLDEN_200 = bytes.fromhex(
    "286465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283a0a1a2a3a4a5a61b33abd54a85623ea569064395"
    "e58af13e0f5236516a2de49561acd568adc29bf4dc5e77da5a5d3d6e076367d1e2fc37fdec771087a18eb6c539710679c868648632"
    "686a39e689012a4e87d3a9fd3aef15d8d58e54e8dbc47715d3956f431cf2c248e96d16236aad36824f7ca24c3edb14950d32305e6d"
    "8c33e6ac2b3e0301d0a79e07fc1c77d44d67263fab3d7f513f54b8752456c76b750cf529577592e78a08e9b64f8e0d59561c43cd92"
    "8c60b61b2923e5727793e31264fb1ff9eb51162085024aa6171b9a82c230a62d8bc0575e552faf620135e2dba0bc29cbc7bb895efe"
    "14e9a320455bf891ec1b0eecdc0216b2191c31223d20288f4e9eb1319a3a3b0a7563e5e11203d35f46f7c6341a1699a1d5797f1981"
    "3973"
)
GOLDEN_EMPTY = bytes.fromhex(
    "286465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283a0a1a2a3a4a5a62d6f2a4f942a534c7b92d27da7a1836b"
)


def spec_encrypt(key: bytes, plaintext: bytes, ad: bytes, segment: int, salt: bytes, prefix: bytes) -> bytes:
    """The Tink AES-GCM-HKDF streaming spec, written out plainly (no ztid code)."""
    derived = HKDF(hashes.SHA256(), 32, salt, ad).derive(key)
    header = bytes([40]) + salt + prefix
    first = segment - len(header) - 16
    pieces = [plaintext[:first]]
    rest = plaintext[first:]
    while rest:
        pieces.append(rest[: segment - 16])
        rest = rest[segment - 16 :]
    out = header
    for i, piece in enumerate(pieces):
        nonce = prefix + struct.pack(">I", i) + (b"\x01" if i == len(pieces) - 1 else b"\x00")
        out += AESGCM(derived).encrypt(nonce, piece, b"")
    return out


def test_golden_bytes_are_pinned():
    assert _encrypt_with(KEY, PLAINTEXT, AD, segment_size=SEGMENT, salt=SALT, nonce_prefix=PREFIX) == GOLDEN_200
    assert _encrypt_with(KEY, b"", b"", segment_size=SEGMENT, salt=SALT, nonce_prefix=PREFIX) == GOLDEN_EMPTY


def test_golden_matches_an_independent_reading_of_the_spec():
    assert spec_encrypt(KEY, PLAINTEXT, AD, SEGMENT, SALT, PREFIX) == GOLDEN_200
    assert spec_encrypt(KEY, b"", b"", SEGMENT, SALT, PREFIX) == GOLDEN_EMPTY


def test_golden_layout_is_header_then_five_segments():
    assert GOLDEN_200[0] == 40 and GOLDEN_200[1:33] == SALT and GOLDEN_200[33:40] == PREFIX
    # 40 + (8+16) + 3*(48+16) + (0..) : 200 = 8 + 48*3 + 48 -> 5 segments, the last one full
    assert len(GOLDEN_200) == 40 + 200 + 5 * 16 == 5 * SEGMENT
    assert len(GOLDEN_EMPTY) == 40 + 16


def test_golden_decrypts_with_ztid_and_with_tink(tink):
    assert stream.decrypt(KEY, GOLDEN_200, AD, segment_size=SEGMENT) == PLAINTEXT
    assert stream.decrypt(KEY, GOLDEN_EMPTY, b"", segment_size=SEGMENT) == b""
    primitive = tink.primitive(KEY, SEGMENT)
    assert tink.decrypt(primitive, GOLDEN_200, AD) == PLAINTEXT
    assert tink.decrypt(primitive, GOLDEN_EMPTY, b"") == b""
