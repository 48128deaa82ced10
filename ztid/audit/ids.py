"""Decision ids: 128 random bits from the OS CSPRNG as 32 hex digits, drawn 256 at a time."""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["new_decision_id"]

_BATCH_BYTES: Final = 4096  # 256 ids per getrandom(2) call instead of one call per id
_ready: list[str] = []
_refill = threading.Lock()


def new_decision_id() -> str:
    """A fresh decision id (32 lowercase hex digits); safe from any thread, never handed out twice."""
    while True:
        try:
            return _ready.pop()  # atomic under the GIL: two threads never get the same id
        except IndexError:
            with _refill:
                if not _ready:
                    batch = os.urandom(_BATCH_BYTES).hex()
                    _ready.extend(batch[i:i + 32] for i in range(0, len(batch), 32))


def _forget() -> None:
    """A forked child must not hand out the ids its parent will also hand out."""
    _ready.clear()


os.register_at_fork(after_in_child=_forget)
