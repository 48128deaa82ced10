"""The encrypted channel's frame header and the byte views of the buffers it carries (bytes, numpy, torch).

A frame is one message::

    header  = "ZTC1" | kind(1) | 0(1) | meta_len(2) | epoch(4) | counter(8) | length(8) | segment_size(4) | meta
    segment_k = AES-256-GCM(key_epoch, nonce = epoch(4) | counter+k (8),
                            aad = channel_id(16) | header | k(4) | last(1))  -> ciphertext | tag(16)

All integers are big-endian. ``kind`` is 0 for raw bytes and 1 for a tensor, whose ``meta`` is
``dtype|d0,d1,...`` in ASCII (dtype as numpy names it, e.g. ``float32``; ``bfloat16`` for torch's).
A message of ``length`` bytes has ``max(1, ceil(length / segment_size))`` segments; the whole
header is in every segment's associated data, so its fields cannot be changed without failing the tag.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any

from ztid.errors import DecryptionError, UsageError

__all__ = ["HEADER", "TAG", "Header", "byte_view", "meta_of", "n_segments", "parse_meta", "tensor_from", "writable_view"]

MAGIC = b"ZTC1"
HEADER = struct.Struct(">4sBBHIQQI")
TAG = 16
KIND_BYTES, KIND_TENSOR = 0, 1
MAX_META = 512
MAX_SEGMENT = 64 << 20


@dataclass(frozen=True)
class Header:
    """A parsed frame header (``raw`` is the exact bytes, bound into every segment's AAD)."""

    kind: int
    meta: bytes
    epoch: int
    counter: int
    length: int
    segment_size: int
    raw: bytes

    @classmethod
    def build(cls, *, kind: int, meta: bytes, epoch: int, counter: int, length: int, segment_size: int) -> Header:
        raw = HEADER.pack(MAGIC, kind, 0, len(meta), epoch, counter, length, segment_size) + meta
        return cls(kind, meta, epoch, counter, length, segment_size, raw)

    @staticmethod
    def parse_fixed(data: bytes) -> tuple[int, int, int, int, int, int]:
        """Check and unpack the fixed part; returns (kind, meta_len, epoch, counter, length, segment_size).

        Raises:
            DecryptionError: not a channel frame (bad magic, kind or sizes).
        """
        magic, kind, reserved, meta_len, epoch, counter, length, seg = HEADER.unpack(data)
        if magic != MAGIC or kind not in (KIND_BYTES, KIND_TENSOR) or reserved or meta_len > MAX_META:
            raise DecryptionError()
        if not 0 < seg <= MAX_SEGMENT:
            raise DecryptionError()
        return kind, meta_len, epoch, counter, length, seg


def n_segments(length: int, segment_size: int) -> int:
    """How many segments a message of ``length`` bytes has (at least one)."""
    return max(1, -(-length // segment_size))


def _torch() -> Any:
    return sys.modules.get("torch")


def meta_of(buffer: Any) -> tuple[int, bytes]:
    """``(kind, meta)`` of a buffer: tensors name their dtype and shape, anything else is raw bytes."""
    torch = _torch()
    if torch is not None and isinstance(buffer, torch.Tensor):
        name = str(buffer.dtype).removeprefix("torch.")
        return KIND_TENSOR, _meta(name, tuple(buffer.shape))
    np = sys.modules.get("numpy")
    if np is not None and isinstance(buffer, np.ndarray):
        dt = buffer.dtype
        if dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big"):
            raise UsageError(f"big-endian arrays are not sent as tensors; got dtype {dt.str!r}")
        return KIND_TENSOR, _meta(dt.name, buffer.shape)
    return KIND_BYTES, b""


def _meta(dtype: str, shape: tuple[int, ...]) -> bytes:
    meta = (dtype + "|" + ",".join(str(int(d)) for d in shape)).encode("ascii")
    if len(meta) > MAX_META:
        raise UsageError(f"tensor of {len(shape)} dimensions is too deep to describe in {MAX_META} bytes")
    return meta


def parse_meta(meta: bytes) -> tuple[str, tuple[int, ...]]:
    """``(dtype name, shape)`` from a tensor frame's meta (already authenticated)."""
    name, _, dims = meta.decode("ascii").partition("|")
    return name, tuple(int(d) for d in dims.split(",")) if dims else ()


def byte_view(buffer: Any) -> memoryview:
    """A flat read-only byte view of ``buffer`` without copying when it is contiguous.

    Raises:
        UsageError: the buffer is not bytes-like, or a tensor on a device other than the CPU.
    """
    torch = _torch()
    if torch is not None and isinstance(buffer, torch.Tensor):
        return memoryview(_torch_bytes(buffer, writable=False)).cast("B")
    np = sys.modules.get("numpy")
    if np is not None and isinstance(buffer, np.ndarray):
        arr = buffer if buffer.flags.c_contiguous else np.ascontiguousarray(buffer)
        return memoryview(arr.reshape(-1).view(np.uint8))
    try:
        view = memoryview(buffer)
    except TypeError as exc:
        raise UsageError(f"cannot send {type(buffer).__name__}: not bytes-like, numpy or torch") from exc
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def writable_view(buffer: Any) -> memoryview:
    """A flat writable byte view into ``buffer`` (received plaintext lands there, no copy).

    Raises:
        UsageError: read-only, non-contiguous, or not a CPU buffer.
    """
    torch = _torch()
    if torch is not None and isinstance(buffer, torch.Tensor):
        return memoryview(_torch_bytes(buffer, writable=True)).cast("B")
    np = sys.modules.get("numpy")
    if np is not None and isinstance(buffer, np.ndarray):
        if not buffer.flags.c_contiguous or not buffer.flags.writeable:
            raise UsageError("recv_into needs a C-contiguous, writable numpy array")
        return memoryview(buffer.reshape(-1).view(np.uint8))
    try:
        view = memoryview(buffer)
    except TypeError as exc:
        raise UsageError(f"cannot receive into {type(buffer).__name__}: not a writable buffer") from exc
    if view.readonly or not view.c_contiguous:
        raise UsageError("recv_into needs a writable, contiguous buffer (bytearray, numpy array, tensor)")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _torch_bytes(t: Any, *, writable: bool) -> Any:
    if t.device.type != "cpu":
        raise UsageError(f"the channel carries CPU tensors; move the {t.device.type} tensor to the CPU first")
    t = t.detach()
    if not t.is_contiguous():
        if writable:
            raise UsageError("recv_into needs a contiguous tensor")
        t = t.contiguous()
    flat = t.reshape(-1)
    if flat.element_size() != 1 or flat.dtype != _torch().uint8:
        flat = flat.view(_torch().uint8)
    return flat.numpy()


def tensor_from(data: bytearray, meta: bytes) -> Any:
    """A numpy array (torch tensor when numpy lacks the dtype) over ``data``, shaped as ``meta`` says."""
    name, shape = parse_meta(meta)
    try:
        import numpy as np

        return np.frombuffer(data, dtype=np.dtype(name)).reshape(shape)
    except (ImportError, TypeError):
        import torch

        return torch.frombuffer(data, dtype=getattr(torch, name)).reshape(shape)
