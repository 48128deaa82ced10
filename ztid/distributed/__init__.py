"""Encrypted torch.distributed (gloo): SVID-authenticated, policy-authorized ranks, AES-GCM on every hop.

Every rank, after ``dist.init_process_group("gloo", ...)``::

    from ztid import distributed as zd
    zd.init_secure(source=source, policy=policy)      # pairwise mTLS handshakes; raises if any pair is refused
    zd.all_reduce(grad)                               # ring: decrypt, add, re-encrypt at each hop
    zd.broadcast(weights, src=0); zd.all_gather(outs, t); zd.encrypted_send(t, dst=1); zd.encrypted_recv(t, src=0)

Needs the ``ztid[torch]`` extra. See ``docs/channel.md``.
"""

from __future__ import annotations

from ztid.distributed.collectives import all_gather, all_reduce, broadcast, encrypted_recv, encrypted_send
from ztid.distributed.group import SecureGroup, close_secure, get_secure_group, init_secure

__all__ = [
    "SecureGroup",
    "all_gather",
    "all_reduce",
    "broadcast",
    "close_secure",
    "encrypted_recv",
    "encrypted_send",
    "get_secure_group",
    "init_secure",
]
