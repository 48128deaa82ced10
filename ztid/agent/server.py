"""DevAgent: the local dev Workload API server, wiring the front door, the gRPC server and the state."""

from __future__ import annotations

import datetime as dt
import os
from concurrent import futures
from types import TracebackType

import grpc
from grpc_reflection.v1alpha import reflection

from ztid._proto import workload_pb2 as pb
from ztid._proto import workload_pb2_grpc as pb_grpc
from ztid.agent.frontdoor import FrontDoor
from ztid.agent.service import WorkloadApiServicer
from ztid.agent.state import AgentState
from ztid.errors import SourceError, UsageError
from ztid.spiffeid import SpiffeId

__all__ = ["DevAgent"]


class DevAgent:
    """Serve the SPIFFE Workload API on a unix socket from a dev CA directory.

    Example::

        with DevAgent("ca/", "/tmp/agent.sock", spiffe_id="spiffe://dev.local/training") as agent:
            os.environ["SPIFFE_ENDPOINT_SOCKET"] = agent.endpoint
            ...

    Args:
        ca_dir: a CA directory (``ztid ca init``).
        socket_path: where to listen (a stale socket file is replaced; a live one is an error).
        spiffe_id, selectors, ttl, rotate_every, jwt_ttl, dns_names: see :class:`~ztid.agent.state.AgentState`.
        max_streams: how many RPCs may run at once (each open stream holds one worker thread).

    Raises:
        UsageError: a bad option (also as :class:`~ztid.agent.state.AgentState`).
        ConfigError: as :class:`~ztid.agent.state.AgentState`.
    """

    def __init__(
        self,
        ca_dir: str | os.PathLike[str],
        socket_path: str | os.PathLike[str],
        *,
        spiffe_id: SpiffeId | str | None = None,
        selectors: str | os.PathLike[str] | None = None,
        ttl: dt.timedelta = dt.timedelta(hours=1),
        rotate_every: dt.timedelta | None = None,
        jwt_ttl: dt.timedelta = dt.timedelta(minutes=5),
        max_streams: int = 64,
        dns_names: tuple[str, ...] = (),
    ) -> None:
        if type(max_streams) is not int or max_streams < 1:
            raise UsageError(f"max_streams must be a positive integer, got {max_streams!r}")
        self.state = AgentState(ca_dir, spiffe_id=spiffe_id, selectors=selectors, ttl=ttl,
                                rotate_every=rotate_every, jwt_ttl=jwt_ttl, dns_names=dns_names)
        self.socket_path = os.path.abspath(os.fspath(socket_path))
        self._max_streams = max_streams
        self._door: FrontDoor | None = None
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """The value for ``SPIFFE_ENDPOINT_SOCKET`` (``unix:///abs/path``)."""
        return "unix://" + self.socket_path

    def start(self) -> "DevAgent":
        """Start serving.

        Raises:
            SourceError: the socket cannot be bound.
        """
        door = FrontDoor(self.socket_path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_streams, thread_name_prefix="ztid-agent"),
                             maximum_concurrent_rpcs=self._max_streams)
        pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(WorkloadApiServicer(self.state, door.peer_of), server)
        service = pb.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"].full_name
        reflection.enable_server_reflection((service, reflection.SERVICE_NAME), server, pool=pb._POOL)
        if server.add_insecure_port("unix:" + door.backend_path) == 0:
            door.stop()
            raise SourceError(f"cannot bind the agent's private socket {door.backend_path!r}")
        server.start()
        try:
            door.start()
        except SourceError:
            server.stop(None)
            door.stop()
            raise
        self._door, self._server = door, server
        self._pid = os.getpid()
        return self

    def reload(self) -> None:
        """Re-read the CA directory and selector file (what SIGHUP does); see :meth:`AgentState.reload`."""
        self.state.reload()

    def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving; open streams end with CANCELLED/UNAVAILABLE. A no-op in a forked child."""
        if self._server is None or getattr(self, "_pid", None) != os.getpid():
            return  # not started, or a forked child: the agent belongs to the parent
        self.state.close()
        if self._door is not None:
            self._door.stop()
        if self._server is not None:
            self._server.stop(grace).wait(5)
        self._door = self._server = None

    def __enter__(self) -> "DevAgent":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
