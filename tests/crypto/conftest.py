"""Fixtures for tests/crypto: a Tink StreamingAead built from raw key material."""

from __future__ import annotations

import io
import os

import pytest


def tink_streaming_aead(key: bytes, segment_size: int):
    """A Tink AES256_GCM_HKDF StreamingAead over ``key`` (RAW output prefix, as streaming keys are)."""
    from tink import cleartext_keyset_handle, streaming_aead
    from tink.proto import aes_gcm_hkdf_streaming_pb2 as pb, common_pb2, tink_pb2

    streaming_aead.register()
    params = pb.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256
    )
    key_proto = pb.AesGcmHkdfStreamingKey(version=0, key_value=key, params=params)
    keyset = tink_pb2.Keyset(
        primary_key_id=7,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key_proto.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=7,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    return cleartext_keyset_handle.from_keyset(keyset).primitive(streaming_aead.StreamingAead)


class _KeepValue(io.BytesIO):
    """BytesIO that remembers its contents when Tink closes it."""

    value = b""

    def close(self) -> None:
        self.value = self.getvalue()
        super().close()


def tink_encrypt(primitive, plaintext: bytes, associated_data: bytes) -> bytes:
    sink = _KeepValue()
    with primitive.new_encrypting_stream(sink, associated_data) as writer:
        writer.write(plaintext)
    return sink.value


def tink_decrypt(primitive, ciphertext: bytes, associated_data: bytes) -> bytes:
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as reader:
        return reader.read()


class TinkHelpers:
    """Handed to tests as the ``tink`` fixture (conftest is not importable under importlib mode)."""

    primitive = staticmethod(tink_streaming_aead)
    encrypt = staticmethod(tink_encrypt)
    decrypt = staticmethod(tink_decrypt)


@pytest.fixture
def tink() -> TinkHelpers:
    return TinkHelpers()


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)
