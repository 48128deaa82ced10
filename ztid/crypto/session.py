"""Session keys for an encrypted channel: a handshake inside mTLS and an HKDF-SHA256 key schedule.

Two workloads that already hold an authorized mTLS connection (:mod:`ztid.enforce.tls`) run
:func:`handshake` over it. Each side contributes a fresh 32-byte secret; the keys are derived with
HKDF-SHA256 and bound to both SPIFFE IDs (by role), a 16-byte channel id, a caller context and the
epoch. The wire exchange (all inside TLS 1.3)::

    initiator -> responder   HELLO  = "ZTH1" | 0x01 | channel_id(16) | secret_i(32) | len(2) | context
    responder -> initiator   HELLO  = "ZTH1" | 0x02 | channel_id(16) | secret_r(32) | len(2) | context
    both                     CONFIRM = "ZTH1" | 0x03 | HMAC-SHA256(prk, "confirm" | role)      (32)

Key schedule (``lp(x)`` = 2-byte big-endian length then ``x``)::

    prk        = HKDF-Extract(salt="ztid/channel/v1", ikm=secret_i | secret_r)
    transcript = lp(initiator SPIFFE ID) | lp(responder SPIFFE ID) | channel_id | lp(context)
    chain_0[d] = HKDF-Expand(prk, "ztid/channel/v1 chain " | d | transcript, 32)   d in {"i2r", "r2i"}
    key_e[d]   = HKDF-Expand(chain_e[d], "ztid/channel/v1 key" | epoch(4), 32)
    chain_e+1  = HKDF-Expand(chain_e[d], "ztid/channel/v1 next" | epoch(4), 32)

A rekey moves one direction to the next epoch without a round trip; the old chain key is dropped
so a later compromise of the process does not reveal earlier epochs' keys (as far as Python lets
memory be forgotten). Python 3.11's ``ssl`` has no ``export_keying_material``, so the TLS exporter
is not mixed in; ``docs/channel.md`` argues why the fresh secrets inside TLS 1.3 suffice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ztid.errors import CryptoError, TransportError, UsageError
from ztid.spiffeid import SpiffeId

if TYPE_CHECKING:  # pragma: no cover
    from ztid.enforce.tls import ZtidSocket

__all__ = ["DirectionKeys", "SessionKeys", "derive_session", "handshake"]

_MAGIC = b"ZTH1"
_LABEL = b"ztid/channel/v1"
_HELLO_I, _HELLO_R, _CONFIRM = 1, 2, 3
_SECRET = 32
_MAX_CONTEXT = 1024
MAX_EPOCH = (1 << 32) - 1


def _lp(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise UsageError(f"handshake field too long ({len(data)} bytes)")
    return struct.pack(">H", len(data)) + data


def _expand(key: bytes, info: bytes) -> bytes:
    return HKDFExpand(hashes.SHA256(), 32, info).derive(key)


@dataclass
class DirectionKeys:
    """The key chain of one direction: the current epoch's AES-256 key and the chain key for the next.

    Attributes:
        epoch: the current epoch (0 after the handshake).
        key: the AES-256-GCM key of this epoch.
    """

    epoch: int
    key: bytes
    _chain: bytes = field(repr=False)

    @classmethod
    def start(cls, chain0: bytes) -> DirectionKeys:
        return cls(0, _expand(chain0, _LABEL + b" key" + struct.pack(">I", 0)), chain0)

    def advance(self) -> None:
        """Move to the next epoch: derive the next chain key and this epoch's key; forget the old ones.

        Raises:
            CryptoError: the epoch counter is exhausted (2^32 epochs); open a new session.
        """
        if self.epoch >= MAX_EPOCH:
            raise CryptoError("channel epoch exhausted; open a new session")
        nxt = _expand(self._chain, _LABEL + b" next" + struct.pack(">I", self.epoch))
        self.epoch += 1
        self._chain = nxt
        self.key = _expand(nxt, _LABEL + b" key" + struct.pack(">I", self.epoch))


@dataclass
class SessionKeys:
    """What a handshake established for one side: both directions' key chains and the bound names.

    Attributes:
        local_id / peer_id: the SPIFFE IDs the keys are bound to (the peer's as TLS verified it).
        initiator: whether this side opened the session.
        channel_id: 16 bytes naming the channel (also bound into every frame's associated data).
        context: caller context bound into the keys (e.g. process group and ranks).
        send / recv: this side's sending and receiving key chains.
    """

    local_id: SpiffeId
    peer_id: SpiffeId
    initiator: bool
    channel_id: bytes
    context: bytes
    send: DirectionKeys
    recv: DirectionKeys


def derive_session(
    *,
    initiator_secret: bytes,
    responder_secret: bytes,
    initiator_id: SpiffeId,
    responder_id: SpiffeId,
    channel_id: bytes,
    context: bytes = b"",
    initiator: bool,
) -> tuple[SessionKeys, bytes]:
    """The key schedule alone (pure): keys for one side and the PRK used for key confirmation.

    Raises:
        UsageError: a secret is not 32 bytes or the channel id not 16.
    """
    if len(initiator_secret) != _SECRET or len(responder_secret) != _SECRET:
        raise UsageError("handshake secrets must be 32 bytes each")
    if len(channel_id) != 16:
        raise UsageError(f"channel id must be 16 bytes, got {len(channel_id)}")
    if not isinstance(initiator_id, SpiffeId) or not isinstance(responder_id, SpiffeId):
        raise UsageError("session keys bind SpiffeId values, not strings")
    prk = hmac.new(_LABEL, initiator_secret + responder_secret, hashlib.sha256).digest()  # HKDF-Extract
    transcript = _lp(str(initiator_id).encode()) + _lp(str(responder_id).encode()) + channel_id + _lp(context)
    i2r = DirectionKeys.start(_expand(prk, _LABEL + b" chain i2r" + transcript))
    r2i = DirectionKeys.start(_expand(prk, _LABEL + b" chain r2i" + transcript))
    prk_confirm = _expand(prk, _LABEL + b" confirm" + transcript)
    if initiator:
        keys = SessionKeys(initiator_id, responder_id, True, channel_id, context, send=i2r, recv=r2i)
    else:
        keys = SessionKeys(responder_id, initiator_id, False, channel_id, context, send=r2i, recv=i2r)
    return keys, prk_confirm


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            raise TransportError(f"handshake: peer closed the connection after {got} of {n} bytes")
        got += k
    return bytes(buf)


def _send_hello(conn: socket.socket, kind: int, channel_id: bytes, secret: bytes, context: bytes) -> None:
    conn.sendall(_MAGIC + bytes([kind]) + channel_id + secret + _lp(context))


def _read_hello(conn: socket.socket, kind: int) -> tuple[bytes, bytes, bytes]:
    head = _recv_exact(conn, 4 + 1 + 16 + _SECRET + 2)
    if head[:4] != _MAGIC or head[4] != kind:
        raise TransportError(f"handshake: unexpected message {head[:5]!r} (want ZTH1 type {kind})")
    (clen,) = struct.unpack(">H", head[-2:])
    if clen > _MAX_CONTEXT:
        raise TransportError(f"handshake: context of {clen} bytes exceeds {_MAX_CONTEXT}")
    context = _recv_exact(conn, clen) if clen else b""
    return head[5:21], head[21:53], context


def _confirm_tag(prk: bytes, initiator: bool) -> bytes:
    return hmac.new(prk, b"confirm " + (b"initiator" if initiator else b"responder"), hashlib.sha256).digest()


def handshake(
    conn: ZtidSocket,
    *,
    local_id: SpiffeId,
    initiator: bool,
    context: bytes = b"",
    channel_id: bytes | None = None,
    expect_context: bytes | None = None,
) -> SessionKeys:
    """Run the session handshake over an authorized mTLS connection; return this side's keys.

    Args:
        conn: a socket from :func:`ztid.enforce.tls.connect` or ``Listener.accept`` (its ``peer``
            is the verified, policy-admitted peer).
        local_id: this workload's SPIFFE ID (the one its SVID carries).
        initiator: True on the side that connected.
        context: bytes the initiator binds into the keys (e.g. group and ranks).
        channel_id: the initiator's 16-byte channel id (random when omitted).
        expect_context: responder only: refuse an initiator whose context differs.

    Raises:
        TransportError: the peer broke the protocol, closed the connection, or failed key confirmation.
        UsageError: ``conn`` carries no verified peer, or bad arguments.
    """
    peer = getattr(conn, "peer", None)
    if peer is None:
        raise UsageError("handshake needs a ztid mTLS socket whose peer was verified (tls.connect/accept)")
    peer_id = peer.spiffe_id
    try:
        if initiator:
            cid = channel_id if channel_id is not None else os.urandom(16)
            mine = os.urandom(_SECRET)
            _send_hello(conn, _HELLO_I, cid, mine, context)
            echoed, theirs, _ = _read_hello(conn, _HELLO_R)
            if echoed != cid:
                raise TransportError("handshake: responder answered for another channel id")
            keys, prk = derive_session(
                initiator_secret=mine, responder_secret=theirs, initiator_id=local_id, responder_id=peer_id,
                channel_id=cid, context=context, initiator=True,
            )
        else:
            cid, theirs, context = _read_hello(conn, _HELLO_I)
            if expect_context is not None and not hmac.compare_digest(context, expect_context):
                raise TransportError(f"handshake: initiator context {context!r} is not the expected {expect_context!r}")
            mine = os.urandom(_SECRET)
            _send_hello(conn, _HELLO_R, cid, mine, context)
            keys, prk = derive_session(
                initiator_secret=theirs, responder_secret=mine, initiator_id=peer_id, responder_id=local_id,
                channel_id=cid, context=context, initiator=False,
            )
        conn.sendall(_MAGIC + bytes([_CONFIRM]) + _confirm_tag(prk, initiator))
        got = _recv_exact(conn, 4 + 1 + 32)
        if got[:5] != _MAGIC + bytes([_CONFIRM]) or not hmac.compare_digest(got[5:], _confirm_tag(prk, not initiator)):
            raise TransportError("handshake: key confirmation failed (the peer derived different keys)")
    except OSError as exc:
        raise TransportError(f"handshake with {peer_id} failed: {exc}") from exc
    return keys
