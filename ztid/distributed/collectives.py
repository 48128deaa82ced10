"""Encrypted point-to-point and collectives for gloo: every hop is a channel frame sent as a uint8 tensor.

Ciphertext travels over the process group's own gloo transport (``isend``/``recv`` of the frame as a
``uint8`` tensor): it reuses the network setup the job already has (interfaces, ports, timeouts), needs
no second set of sockets, and gloo moves bytes without looking at them. The pairwise mTLS connections
only carry the handshakes. Collectives:

* ``broadcast``: the source encrypts once per peer (each pair has its own keys) and sends directly.
* ``all_gather``: a ring; each hop decrypts into the output list and re-encrypts for the next rank.
* ``all_reduce``: a ring (reduce-scatter, then all-gather); at each hop a rank decrypts the chunk it
  received, reduces it into its own, and encrypts the result for the next hop. Results match gloo
  within float tolerance (the summation order differs) and are bitwise equal on every rank.
"""

from __future__ import annotations

from typing import Any

from ztid.distributed.group import SecureGroup, get_secure_group
from ztid.errors import TransportError, UsageError

__all__ = ["all_gather", "all_reduce", "broadcast", "encrypted_recv", "encrypted_send"]


def _torch() -> Any:
    import torch
    import torch.distributed as dist

    return torch, dist


class _Work:
    """A started gloo send whose failure surfaces as a TransportError."""

    def __init__(self, work: Any, peer: int) -> None:
        self._work, self._peer = work, peer

    def wait(self) -> None:
        try:
            self._work.wait()
        except RuntimeError as exc:
            raise TransportError(f"gloo send to rank {self._peer} failed: {exc}") from exc


def _isend(sg: SecureGroup, tensor: Any, dst: int) -> _Work:
    """Seal ``tensor`` for ``dst`` and start sending it; the returned work must finish before the next seal to ``dst``."""
    torch, dist = _torch()
    frame = sg.channel(dst).seal(tensor)
    wire = torch.frombuffer(frame, dtype=torch.uint8)
    try:
        return _Work(dist.isend(wire, sg.global_rank(dst), group=sg.group), dst)
    except RuntimeError as exc:
        raise TransportError(f"gloo send to rank {dst} failed: {exc}") from exc


def _recv(sg: SecureGroup, out: Any, src: int) -> None:
    """Receive the frame from ``src`` and decrypt it into ``out`` (which must match the sent tensor)."""
    torch, dist = _torch()
    ch = sg.channel(src)
    size = ch.frame_size(out)
    buf = sg._scratch.get(src)
    if buf is None or buf.numel() < size:
        buf = torch.empty(size, dtype=torch.uint8)
        sg._scratch[src] = buf
    wire = buf[:size]
    try:
        dist.recv(wire, sg.global_rank(src), group=sg.group)
    except RuntimeError as exc:  # gloo: size mismatch (a different tensor was sent), peer gone, timeout
        raise TransportError(f"gloo receive from rank {src} failed: {exc}") from exc
    ch.open_into(wire.numpy(), out)


def _check(tensor: Any) -> None:
    torch, _ = _torch()
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise UsageError("ztid.distributed carries CPU tensors over gloo")


def encrypted_send(tensor: Any, dst: int, *, group: Any = None) -> None:
    """Send ``tensor`` to group rank ``dst``, encrypted and authenticated (dtype and shape included).

    Raises:
        UsageError: no secure group, or ``tensor`` is not a CPU tensor.
        ChannelClosed: the channel to ``dst`` failed earlier.
    """
    _check(tensor)
    _isend(get_secure_group(group), tensor, dst).wait()


def encrypted_recv(tensor: Any, src: int, *, group: Any = None) -> None:
    """Receive into ``tensor`` from group rank ``src``; dtype and shape must match what was sent.

    Raises:
        DecryptionError: the frame did not verify; the channel to ``src`` is closed and ``tensor`` zeroed.
        CryptoError: the message does not match ``tensor``.
        UsageError: no secure group, or ``tensor`` is not a contiguous CPU tensor.
    """
    _check(tensor)
    _recv(get_secure_group(group), tensor, src)


def broadcast(tensor: Any, src: int, *, group: Any = None) -> None:
    """``dist.broadcast`` with every copy encrypted for its receiver; bitwise equal results.

    Raises:
        the errors of :func:`encrypted_send` and :func:`encrypted_recv`.
    """
    _check(tensor)
    sg = get_secure_group(group)
    if sg.rank == src:
        works = [_isend(sg, tensor, peer) for peer in range(sg.world_size) if peer != src]
        for w in works:
            w.wait()
    else:
        _with_contiguous(tensor, lambda t: _recv(sg, t, src))


def all_gather(tensor_list: list[Any], tensor: Any, *, group: Any = None) -> None:
    """``dist.all_gather`` around an encrypted ring; ``tensor_list[i]`` receives rank i's tensor, bitwise.

    Raises:
        UsageError: ``tensor_list`` does not have one contiguous tensor per rank.
        DecryptionError, CryptoError: a hop did not verify or did not match.
    """
    _check(tensor)
    sg = get_secure_group(group)
    n, r = sg.world_size, sg.rank
    if len(tensor_list) != n or any(not t.is_contiguous() for t in tensor_list):
        raise UsageError(f"all_gather needs a list of {n} contiguous tensors")
    tensor_list[r].copy_(tensor)
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        work = _isend(sg, tensor_list[(r - s) % n], right)
        _recv(sg, tensor_list[(r - s - 1) % n], left)
        work.wait()


def _reducer(op: Any) -> Any:
    torch, dist = _torch()
    ops = {
        dist.ReduceOp.SUM: lambda a, b: a.add_(b),
        dist.ReduceOp.PRODUCT: lambda a, b: a.mul_(b),
        dist.ReduceOp.MIN: lambda a, b: torch.minimum(a, b, out=a),
        dist.ReduceOp.MAX: lambda a, b: torch.maximum(a, b, out=a),
    }
    fn = ops.get(op)
    if fn is None:
        raise UsageError(f"encrypted all_reduce supports SUM, PRODUCT, MIN and MAX, not {op}")
    return fn


def all_reduce(tensor: Any, op: Any = None, *, group: Any = None) -> None:
    """``dist.all_reduce`` in place, as an encrypted ring: decrypt, reduce, re-encrypt at every hop.

    Args:
        tensor: the CPU tensor to reduce (in place on every rank).
        op: ``dist.ReduceOp.SUM`` (default), PRODUCT, MIN or MAX.

    Raises:
        UsageError: unsupported op or tensor.
        DecryptionError, CryptoError: a hop did not verify or did not match.
    """
    torch, dist = _torch()
    _check(tensor)
    reduce = _reducer(dist.ReduceOp.SUM if op is None else op)
    sg = get_secure_group(group)
    n, r = sg.world_size, sg.rank
    if n == 1:
        return

    def run(flat_owner: Any) -> None:
        chunks = list(torch.tensor_split(flat_owner.view(-1), n))
        right, left = (r + 1) % n, (r - 1) % n
        tmp = torch.empty_like(chunks[0])
        for s in range(n - 1):  # reduce-scatter: afterwards this rank owns chunk (r + 1) % n
            work = _isend(sg, chunks[(r - s) % n], right)
            target = chunks[(r - s - 1) % n]
            incoming = tmp[: target.numel()]
            _recv(sg, incoming, left)
            reduce(target, incoming)
            work.wait()
        for s in range(n - 1):  # all-gather of the reduced chunks
            work = _isend(sg, chunks[(r + 1 - s) % n], right)
            _recv(sg, chunks[(r - s) % n], left)
            work.wait()

    _with_contiguous(tensor, run)


def _with_contiguous(tensor: Any, fn: Any) -> None:
    if tensor.is_contiguous():
        fn(tensor)
        return
    work = tensor.contiguous()
    fn(work)
    tensor.copy_(work)
