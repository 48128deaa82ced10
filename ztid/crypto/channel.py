"""An identity-keyed encrypted channel for bytes and tensors: AES-256-GCM frames with counter nonces.

Keys come from :func:`ztid.crypto.session.handshake` (inside mTLS, bound to both SPIFFE IDs). Use it
over a socket or any send/recv pair::

    keys = session.handshake(tls_conn, local_id=me, initiator=True)
    ch = Channel(keys, sock=data_sock)          # or Channel(keys, send=..., recv_into=...)
    ch.send(tensor)                             # dtype and shape are authenticated with the data
    ch.recv_into(out_tensor)                    # decrypted in place, no intermediate copy

or message by message, when the transport moves whole buffers (torch.distributed, queues)::

    frame = ch.seal(tensor)                     # a view of header | segments, valid until the next seal
    ch.open_into(frame, out_tensor)

The frame format is in :mod:`ztid.crypto.channel_frame`. Each direction has its own key chain and a
nonce = epoch(4) | counter(8) that counts AEAD calls and never repeats: the sender moves to a new
epoch (new key, counter 0) before ``rekey_after`` calls (at most 2^32) or when :meth:`Channel.rekey`
asks, and the receiver follows when it sees the next epoch. Segments of large messages are
encrypted and decrypted on a small thread pool (AES-GCM releases the GIL). A frame that is replayed,
reordered, dropped, truncated, altered or from another channel fails the check, zeroes what was
written into the caller's buffer, and closes the channel: every later call raises :class:`ChannelClosed`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ztid.crypto.channel_aead import PARALLEL_MIN as _PARALLEL_MIN
from ztid.crypto.channel_aead import decrypt_segments, encrypt_segments
from ztid.crypto.channel_errors import ChannelClosed, FrameOrderError, TruncatedError
from ztid.crypto.channel_frame import (
    HEADER,
    KIND_TENSOR,
    TAG,
    Header,
    byte_view,
    meta_of,
    n_segments,
    writable_view,
)
from ztid.crypto.channel_stream import StreamMixin
from ztid.crypto.session import MAX_EPOCH, SessionKeys
from ztid.errors import CryptoError, UsageError, ZtidError

__all__ = ["Channel", "ChannelClosed", "FrameOrderError", "TruncatedError"]



class _Direction:
    """One direction's key chain, AEAD object and counter."""

    __slots__ = ("aead", "counter", "keys")

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self.aead = AESGCM(keys.key)
        self.counter = 0

    def advance(self) -> None:
        self.keys.advance()
        self.aead = AESGCM(self.keys.key)
        self.counter = 0


class Channel(StreamMixin):
    """Encrypted, authenticated, ordered messages between two workloads sharing :class:`SessionKeys`.

    Args:
        keys: this side's keys from the handshake.
        sock: a connected socket for the ciphertext (a plain TCP/unix socket is enough: every byte
            is authenticated; an mTLS socket works too, at the cost of encrypting twice).
        send: instead of ``sock``: a callable taking a bytes-like object and sending all of it.
        recv_into: instead of ``sock``: a callable filling a memoryview, returning the byte count
            (0 = end of stream). Neither ``sock`` nor ``send``: the channel does :meth:`seal` /
            :meth:`open_into` only.
        segment_size: plaintext bytes per AEAD call (default 1 MiB; ≥ 64 KiB keeps AES-GCM near
            line rate). Both sides must agree when frames travel as whole messages.
        parallel: use the thread pool for messages of ≥ 256 KiB.
        rekey_after: AEAD calls per epoch before the sender rekeys (default and maximum 2^32).
        max_message: largest message :meth:`recv` will allocate for.

    Raises:
        UsageError: inconsistent transport arguments or sizes.
    """

    def __init__(
        self,
        keys: SessionKeys,
        *,
        sock: Any = None,
        send: Callable[[Any], Any] | None = None,
        recv_into: Callable[[memoryview], int] | None = None,
        segment_size: int = 1 << 20,
        parallel: bool = True,
        rekey_after: int = 1 << 32,
        max_message: int = 1 << 34,
    ) -> None:
        if sock is not None and (send is not None or recv_into is not None):
            raise UsageError("give either sock= or send=/recv_into=, not both")
        if not 0 < segment_size <= 64 << 20:
            raise UsageError(f"segment_size must be in (0, 64 MiB], got {segment_size}")
        if not 0 < rekey_after <= 1 << 32:
            raise UsageError(f"rekey_after must be in (0, 2^32], got {rekey_after}")
        self.keys = keys
        self._send_fn = sock.sendall if sock is not None else send
        self._recv_fn = sock.recv_into if sock is not None else recv_into
        self._sock = sock
        self.segment_size = segment_size
        self._parallel = parallel
        self._rekey_after = rekey_after
        self._max_message = max_message
        self._tx = _Direction(keys.send)
        self._rx = _Direction(keys.recv)
        self._rekey_wanted = False
        self._tx_lock = threading.Lock()
        self._rx_lock = threading.Lock()
        self._tx_buf = bytearray()  # seal(): whole frames
        self._tx_ring = bytearray()  # send()/recv_into(): segment slots
        self._rx_ring = bytearray()
        self._failure: BaseException | None = None
        self._closed = False
        self.on_close: list[Callable[[], object]] = []  # e.g. unsubscribe from the SVID source

    # -- state ---------------------------------------------------------------------------------
    @property
    def send_epoch(self) -> int:
        return self._tx.keys.epoch

    @property
    def recv_epoch(self) -> int:
        return self._rx.keys.epoch

    def rekey(self) -> None:
        """Move the sending direction to a new epoch before the next message (e.g. after an SVID rotation).

        The peer follows when that message arrives; nothing is torn down and no round trip is needed.
        """
        self._rekey_wanted = True

    def close(self) -> None:
        """Close the channel (and its socket, if it was given one); run the ``on_close`` callbacks once."""
        self._closed = True
        while self.on_close:
            self.on_close.pop()()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise ChannelClosed(f"channel closed after an earlier failure: {self._failure}") from self._failure
        if self._closed:
            raise ChannelClosed("channel is closed")

    def _fail(self, exc: BaseException) -> BaseException:
        self._failure = exc
        self.close()
        return exc

    # -- sending -------------------------------------------------------------------------------
    def _next_header(self, length: int, kind: int, meta: bytes) -> Header:
        """The header of the next message, advancing the epoch if due and reserving its counters."""
        nseg = n_segments(length, self.segment_size)
        if nseg > self._rekey_after:
            raise UsageError(f"a message of {length} bytes needs {nseg} segments, more than rekey_after={self._rekey_after}")
        tx = self._tx
        if self._rekey_wanted or tx.counter + nseg > self._rekey_after:
            if tx.keys.epoch >= MAX_EPOCH:
                raise self._fail(CryptoError("channel epoch exhausted; open a new session"))
            tx.advance()
            self._rekey_wanted = False
        header = Header.build(kind=kind, meta=meta, epoch=tx.keys.epoch, counter=tx.counter, length=length, segment_size=self.segment_size)
        tx.counter += nseg  # reserved before any encryption: a failed send never reuses these nonces
        return header

    def _begin(self, src: memoryview, kind: int, meta: bytes, into: Any = None) -> tuple[Header, memoryview]:
        """Header for the next message and a view for the whole frame (``into`` or the channel's buffer)."""
        length = src.nbytes
        header = self._next_header(length, kind, meta)
        nseg = n_segments(length, self.segment_size)
        size = len(header.raw) + length + nseg * TAG
        if into is not None:
            out = writable_view(into)
            if out.nbytes < size:
                raise UsageError(f"seal(out=...) needs {size} bytes, got {out.nbytes}")
            out = out[:size]
        else:
            if len(self._tx_buf) < size:
                self._tx_buf = bytearray(size)
            out = memoryview(self._tx_buf)[:size]
        out[: len(header.raw)] = header.raw
        return header, out

    def _encrypt(self, header: Header, src: memoryview, out: memoryview) -> Iterator[memoryview]:
        """Segments encrypted in place into ``out`` (header | segments), for :meth:`seal`."""
        parallel = self._parallel and header.length >= _PARALLEL_MIN
        hlen, seg = len(header.raw), header.segment_size

        def dst_for(k: int, n: int) -> memoryview:
            o = hlen + k * (seg + TAG)
            return out[o : o + n]

        return encrypt_segments(self._tx.aead, self.keys.channel_id, header, src, dst_for, parallel=parallel)

    def seal(self, buffer: Any, *, out: Any = None) -> memoryview:
        """Encrypt one message into a frame; returns a view of it.

        Args:
            buffer: bytes-like, numpy array or CPU tensor.
            out: a writable buffer of at least :meth:`frame_size` bytes to hold the frame (so several
                frames can be in flight); by default the channel's own buffer, valid until the next seal.

        Raises:
            ChannelClosed: the channel failed or was closed.
            UsageError: the buffer is not bytes-like, numpy or a CPU tensor, or ``out`` is too small.
        """
        with self._tx_lock:
            self._check_open()
            kind, meta = meta_of(buffer)
            src = byte_view(buffer)
            header, out = self._begin(src, kind, meta, out)
            for _ in self._encrypt(header, src, out):
                pass
            return out

    # -- receiving -----------------------------------------------------------------------------
    def _check_header(self, fixed: bytes) -> tuple[int, int, int, int, int, int]:
        kind, meta_len, epoch, counter, length, seg = Header.parse_fixed(fixed)
        rx = self._rx
        if epoch == rx.keys.epoch:
            if counter != rx.counter:
                raise FrameOrderError(f"expected frame counter {rx.counter} in epoch {epoch}, got {counter}")
        elif epoch == rx.keys.epoch + 1 and counter == 0:
            rx.advance()
        else:
            raise FrameOrderError(f"frame from epoch {epoch} (counter {counter}); channel is at epoch {rx.keys.epoch}")
        return kind, meta_len, epoch, counter, length, seg

    @staticmethod
    def _check_fits(kind: int, meta: bytes, length: int, dest: Any, view: memoryview) -> None:
        dkind, dmeta = meta_of(dest)
        if dkind == KIND_TENSOR and (kind != KIND_TENSOR or meta != dmeta):
            raise CryptoError(f"message {meta.decode('ascii', 'replace') or 'bytes'!r} does not match the tensor {dmeta.decode()!r}")
        if length > view.nbytes:
            raise CryptoError(f"message of {length} bytes does not fit the {view.nbytes}-byte buffer")

    def _decrypt(self, header: Header, ct: memoryview, dest: memoryview) -> None:
        """Open the segments laid out one after another in ``ct`` (a whole frame's body)."""
        parallel = self._parallel and header.length >= _PARALLEL_MIN
        stride = header.segment_size + TAG

        def ct_for(k: int, n: int) -> memoryview:
            return ct[k * stride : k * stride + n]

        decrypt_segments(self._rx.aead, self.keys.channel_id, header, ct_for, dest, parallel=parallel)
        self._rx.counter = header.counter + n_segments(header.length, header.segment_size)

    def open_into(self, frame: Any, buffer: Any) -> int:
        """Verify and decrypt one frame (from :meth:`seal`) into ``buffer``; returns the plaintext length.

        Raises:
            DecryptionError: the frame does not verify (``FrameOrderError``/``TruncatedError`` for the
                order and length checks); the channel is closed and ``buffer`` zeroed.
            CryptoError: the message does not match ``buffer`` (tensor dtype/shape, or size).
            ChannelClosed: the channel failed or was closed.
        """
        with self._rx_lock:
            self._check_open()
            data = byte_view(frame)
            dest = writable_view(buffer)
            try:
                if data.nbytes < HEADER.size:
                    raise TruncatedError("frame shorter than its header")
                kind, meta_len, epoch, counter, length, seg = self._check_header(bytes(data[: HEADER.size]))
                hlen = HEADER.size + meta_len
                if data.nbytes != hlen + length + n_segments(length, seg) * TAG:
                    raise TruncatedError(f"frame of {data.nbytes} bytes does not hold {length} plaintext bytes")
                header = Header(kind, bytes(data[HEADER.size : hlen]), epoch, counter, length, seg, bytes(data[:hlen]))
                self._check_fits(kind, header.meta, length, buffer, dest)
                self._decrypt(header, data[hlen:], dest)
            except ZtidError as exc:
                self._fail(exc)
                raise
            return length

    def frame_size(self, buffer: Any) -> int:
        """The size of the frame that carries ``buffer`` (receivers of fixed-size messages preallocate it)."""
        _, meta = meta_of(buffer)
        length = byte_view(buffer).nbytes
        return HEADER.size + len(meta) + length + n_segments(length, self.segment_size) * TAG
