"""Several sidecar processes for one config: TCP ports shared with SO_REUSEPORT, one log per worker.

A Python gRPC server answers on one core; ``workers: N`` runs N processes so a Check load uses
every core. Worker 0 is the process you started; workers 1..N-1 are spawned (not forked: gRPC is
not fork-safe) with the same config, except what cannot be shared:

* unix listeners: worker *i* listens on ``PATH.i`` (list them all as endpoints of Envoy's cluster);
  TCP listeners are shared, the kernel spreads connections over the workers;
* the decision log: worker *i* writes ``LOG.i`` (one writer per file; verify each);
* metrics: worker *i* serves on ``PORT+i`` (port 0 stays 0).

SIGHUP and SIGTERM to worker 0 are passed on; if a worker dies, all drain and the command exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
from dataclasses import replace
from typing import Any

from ztid.sidecar.config import SidecarConfig
from ztid.sidecar.server import Sidecar

__all__ = ["serve_workers", "worker_config"]


def worker_config(config: SidecarConfig, index: int) -> SidecarConfig:
    """The config worker ``index`` runs with (worker 0 keeps the shared names)."""
    if index == 0:
        return config
    listen = tuple(f"{a}.{index}" if a.startswith("unix:") else a for a in config.listen)
    log = f"{config.decision_log}.{index}" if config.decision_log else None
    metrics = config.metrics
    if metrics:
        host, _, port = metrics.rpartition(":")
        metrics = f"{host}:{int(port) + index}" if int(port) else metrics
    return replace(config, listen=listen, decision_log=log, metrics=metrics)


def _child(config: SidecarConfig, index: int, level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s worker{index} %(name)s %(levelname)s %(message)s")
    asyncio.run(Sidecar(worker_config(config, index)).serve())


def serve_workers(config: SidecarConfig, *, ready: Any = None, log_level: str = "INFO") -> int:
    """Run ``config.workers`` sidecars until SIGTERM; return 0 when every worker drained cleanly."""
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_child, args=(config, i, log_level), name=f"ztid-sidecar-{i}")
                for i in range(1, config.workers)]
    for child in children:
        child.start()
    try:
        asyncio.run(Sidecar(worker_config(config, 0)).serve(ready=ready, children=children))
    finally:
        for child in children:
            child.join(config.drain_seconds + 10)
            if child.is_alive():
                child.kill()
                child.join()
    return 0 if all(child.exitcode == 0 for child in children) else 1
