"""A secure process group: pairwise mTLS handshakes between the ranks of a torch.distributed group.

Every rank calls :func:`init_secure` after ``dist.init_process_group("gloo", ...)``. Each rank listens
for mTLS on ``host`` (port 0), the ranks exchange listener addresses, SPIFFE IDs and a random nonce
through the process group, and every pair (i < j) runs one handshake: rank j connects to rank i
(both sides verify the other's SVID against its own trust domain's bundle and ask the policy for
``action`` in both directions, "write" by default: training→training within a tenant in the shipped policy), then the
session handshake of :mod:`ztid.crypto.session` derives the pair's keys, bound to both SPIFFE IDs
and to a context naming the group nonce and both ranks. Every rank always attempts all of its pairs
and then all ranks share their outcome, so a refused peer makes *every* rank raise instead of hanging.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ztid.crypto.channel import Channel
from ztid.crypto.channel_net import authorize_both_ways
from ztid.crypto.session import SessionKeys, handshake
from ztid.enforce import tls
from ztid.errors import PermissionDenied, TransportError, UsageError, ZtidError
from ztid.spiffeid import SpiffeId

if TYPE_CHECKING:  # pragma: no cover
    from ztid.source import SvidSource

__all__ = ["SecureGroup", "close_secure", "get_secure_group", "init_secure"]

_groups: dict[Any, SecureGroup] = {}
_lock = threading.Lock()


@dataclass
class SecureGroup:
    """The encrypted channels of one rank to every other rank of a process group.

    Attributes:
        group: the torch.distributed group (``None`` = the default group).
        rank / world_size: this rank and the group size.
        peers: group rank -> the peer's verified SPIFFE ID.
        channels: group rank -> the Channel to that rank (message mode; frames travel over gloo).
    """

    group: Any
    rank: int
    world_size: int
    peers: dict[int, SpiffeId]
    channels: dict[int, Channel]
    _global: list[int] = field(default_factory=list, repr=False)
    _scratch: dict[int, Any] = field(default_factory=dict, repr=False)
    _unsubscribe: Any = field(default=None, repr=False)

    def global_rank(self, group_rank: int) -> int:
        """The global rank torch.distributed's point-to-point calls want for ``group_rank``."""
        return self._global[group_rank]

    def group_rank(self, global_rank: int) -> int:
        """This group's rank for ``global_rank`` (torch.distributed's point-to-point calls name global ranks).

        Raises:
            UsageError: ``global_rank`` is not in the group.
        """
        try:
            return self._global.index(global_rank)
        except ValueError:
            raise UsageError(f"rank {global_rank} is not in this group (global ranks {self._global})") from None

    def channel(self, peer: int) -> Channel:
        """The channel to ``peer`` (a group rank).

        Raises:
            UsageError: ``peer`` is this rank or not in the group.
        """
        ch = self.channels.get(peer)
        if ch is None:
            raise UsageError(f"no secure channel from rank {self.rank} to rank {peer} (world size {self.world_size})")
        return ch

    def rekey(self) -> None:
        """Move every channel's sending direction to a new epoch (peers follow on the next frame)."""
        for ch in self.channels.values():
            ch.rekey()

    def close(self) -> None:
        """Close the channels and stop following the source."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for ch in self.channels.values():
            ch.close()


def _dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError as exc:  # pragma: no cover - the torch extra is missing
        raise UsageError("ztid.distributed needs torch: pip install 'ztid[torch]'") from exc
    return dist


_SLOT = 4096  # bytes per rank in the exchanges below


def _gather_bytes(dist: Any, data: bytes, group: Any, world: int) -> list[bytes]:
    """All-gather one short byte string per rank as fixed-size uint8 tensors (no pickle from the network)."""
    import torch

    data = data[: _SLOT - 4]
    mine = torch.zeros(_SLOT, dtype=torch.uint8)
    mine[:4] = torch.frombuffer(bytearray(struct.pack(">I", len(data))), dtype=torch.uint8)
    if data:
        mine[4 : 4 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    slots = [torch.empty(_SLOT, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(slots, mine, group=group)
    out = []
    for slot in slots:
        raw = slot.numpy().tobytes()
        (n,) = struct.unpack(">I", raw[:4])
        out.append(raw[4 : 4 + min(n, _SLOT - 4)])
    return out


def _announce(host: str, port: int, spiffe_id: SpiffeId, nonce: bytes) -> bytes:
    return b"\n".join([host.encode(), str(port).encode(), str(spiffe_id).encode(), nonce.hex().encode()])


def _parse_announce(raw: bytes, rank: int) -> tuple[tuple[str, int], SpiffeId, bytes]:
    try:
        host, port, sid, nonce = raw.decode("utf-8").split("\n")
        address = (host, int(port))
        if not 0 < address[1] < 65536:
            raise ValueError(f"port {port}")
        return address, SpiffeId.parse(sid), bytes.fromhex(nonce)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransportError(f"rank {rank} announced an unusable listener {raw[:200]!r}: {exc}") from exc


def _context(tag: bytes, responder: int, initiator: int) -> bytes:
    return b"ztid/dist/v1" + tag + struct.pack(">II", responder, initiator)


def _accept_all(listener: tls.Listener, count: int, source: SvidSource, policy: Any, action: str, local_id: SpiffeId, tag: bytes,
                rank: int, ids: list[str], out: dict[int, SessionKeys], errors: list[str], timeout: float) -> None:
    """Responder side: accept ``count`` initiators (higher ranks), handshake, check who they claim to be."""
    listener.socket.settimeout(timeout)
    for _ in range(count):
        try:
            raw, address = listener.socket.accept()
        except OSError as exc:
            errors.append(f"rank {rank}: waiting for higher ranks failed: {exc}")
            return
        try:
            conn = listener.handshake(raw)
            with conn:
                authorize_both_ways(conn, source=source, policy=policy, action=action)
                conn.settimeout(timeout)
                keys = handshake(conn, local_id=local_id, initiator=False)
            ctx = keys.context
            prefix = _context(tag, rank, 0)[:-4]
            if len(ctx) != len(prefix) + 4 or ctx[: len(prefix)] != prefix:
                raise TransportError(f"a peer at {address} is not part of this group (wrong context)")
            (peer,) = struct.unpack(">I", ctx[-4:])
            if not rank < peer < len(ids) or peer in out:
                raise TransportError(f"a peer at {address} claims rank {peer}")
            if str(keys.peer_id) != ids[peer]:
                raise TransportError(f"rank {peer} announced {ids[peer]} but authenticated as {keys.peer_id}")
            out[peer] = keys
        except ZtidError as exc:
            errors.append(f"rank {rank} refused a peer: {exc}")


def init_secure(
    group: Any = None,
    *,
    source: SvidSource,
    policy: Any,
    host: str = "127.0.0.1",
    action: str = "write",
    timeout: float = 30.0,
    segment_size: int = 1 << 20,
    rekey_after: int = 1 << 32,
    rekey_on_rotation: bool = True,
) -> SecureGroup:
    """Authenticate, authorize and key every pair of ranks of ``group``; every rank must call it.

    Args:
        group: a gloo process group (``None``: the default group, which must be initialized).
        source: this rank's SVID source.
        policy: a Policy or PolicyWatcher; each pair needs ``action`` allowed both ways.
        host: the address this rank's mTLS listener binds and announces.
        action: the action each rank asks the policy for on its peers.
        timeout: seconds to wait for the handshakes.
        segment_size / rekey_after: passed to every :class:`~ztid.crypto.channel.Channel`.
        rekey_on_rotation: start a new epoch on every channel when the source delivers a new SVID.

    Raises:
        PermissionDenied: the policy refused this rank's peer (on this rank).
        TransportError: a handshake failed anywhere in the group (the message names the ranks).
        UsageError: torch.distributed is not initialized or the backend is not gloo.
        SourceError: the source cannot serve.
    """
    dist = _dist()
    if not dist.is_initialized():
        raise UsageError("call torch.distributed.init_process_group('gloo', ...) before init_secure")
    backend = str(dist.get_backend(group))
    if backend != "gloo":
        raise UsageError(f"ztid.distributed carries ciphertext over gloo; the group's backend is {backend!r}")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    local_id = source.snapshot().svid.spiffe_id
    listener = tls.listen((host, 0), source=source, policy=policy, action=action, handshake_timeout=timeout)
    try:
        host_bound, port = listener.address[:2]
        raw = _gather_bytes(dist, _announce(host_bound, port, local_id, os.urandom(16)), group, world)
        keys: dict[int, SessionKeys] = {}
        errors: list[str] = []
        infos: list[Any] = []
        for i, r in enumerate(raw):
            try:
                infos.append(_parse_announce(r, i))
            except TransportError as exc:  # every rank sees the same announcement and records the same error
                errors.append(str(exc))
                infos.append((None, None, b""))
        ids = [str(i[1]) for i in infos]
        tag = hashlib.sha256(b"".join(i[2] for i in infos)).digest()
        own: list[BaseException] = []
        acceptor = threading.Thread(
            target=_accept_all, args=(listener, world - 1 - rank, source, policy, action, local_id, tag, rank, ids, keys, errors, timeout), daemon=True
        )
        acceptor.start()
        for peer in range(rank):
            if infos[peer][0] is None:
                continue
            try:
                expect = infos[peer][1]
                conn = tls.connect(infos[peer][0], source=source, policy=policy, expect=expect, action=action, timeout=timeout)
                with conn:
                    authorize_both_ways(conn, source=source, policy=policy, action=action)
                    keys[peer] = handshake(conn, local_id=local_id, initiator=True, context=_context(tag, peer, rank))
            except ZtidError as exc:
                own.append(exc)
                errors.append(f"rank {rank} -> rank {peer}: {exc}")
        acceptor.join(timeout + 5)
        outcomes = _gather_bytes(dist, "\n".join(errors).encode("utf-8", "replace"), group, world)
    except RuntimeError as exc:  # gloo: a rank died or timed out
        raise TransportError(f"secure group not established: the process group failed: {exc}") from exc
    finally:
        listener.close()
    problems = [line for raw in outcomes for line in raw.decode("utf-8", "replace").splitlines() if line]
    if problems or len(keys) != world - 1:
        if own and isinstance(own[0], PermissionDenied):
            raise own[0]
        raise TransportError("secure group not established: " + ("; ".join(problems) or "a handshake did not complete"))
    channels = {p: Channel(k, segment_size=segment_size, rekey_after=rekey_after) for p, k in keys.items()}
    ranks = list(range(world)) if group is None else [dist.get_global_rank(group, r) for r in range(world)]
    sg = SecureGroup(group, rank, world, {p: k.peer_id for p, k in keys.items()}, channels, ranks)
    if rekey_on_rotation:
        sg._unsubscribe = source.subscribe(lambda _snap: sg.rekey())
    with _lock:
        old = _groups.pop(group, None)
        _groups[group] = sg
    if old is not None:
        old.close()
    return sg


def get_secure_group(group: Any = None) -> SecureGroup:
    """The SecureGroup :func:`init_secure` made for ``group``.

    Raises:
        UsageError: init_secure was not called for this group.
    """
    sg = _groups.get(group)
    if sg is None:
        raise UsageError("no secure group: every rank must call ztid.distributed.init_secure(...) first")
    return sg


def close_secure(group: Any = None) -> None:
    """Close and forget the SecureGroup of ``group`` (no-op when there is none)."""
    with _lock:
        sg = _groups.pop(group, None)
    if sg is not None:
        sg.close()
