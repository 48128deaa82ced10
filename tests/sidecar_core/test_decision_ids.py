"""Decision ids: 32 lowercase hex digits, never handed out twice (threads, forks)."""

from __future__ import annotations

import os
import re
import threading

from ztid.audit.ids import new_decision_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_128_bit_hex_and_unique_across_batches() -> None:
    ids = [new_decision_id() for _ in range(2000)]  # several 256-id batches
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_never_get_the_same_id() -> None:
    out: list[list[str]] = [[] for _ in range(8)]

    def take(slot: list[str]) -> None:
        slot.extend(new_decision_id() for _ in range(3000))

    threads = [threading.Thread(target=take, args=(slot,)) for slot in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for slot in out for i in slot]
    assert len(set(every)) == len(every) == 24000


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    new_decision_id()  # the parent now holds a batch of ready ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave at once
        try:
            os.write(write, ",".join(new_decision_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = set(f.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_decision_id() for _ in range(300)}  # more than a whole batch
    assert len(child) == 10 and not child & parent
