"""The agent's public unix socket: learn each caller's kernel credentials, then relay it to gRPC.

gRPC Python does not expose a unix-socket peer's credentials (``context.peer()`` is only
``"unix:"``), and cannot serve a socket it did not bind. So the agent binds the public socket
itself. For each accepted connection it reads ``SO_PEERCRED`` (pid, uid, gid, fixed by the
kernel at ``connect()``) and ``/proc/PID/exe``, then opens a connection to the gRPC server's
private socket from a client socket *bound to a fresh path* in a private 0700 directory. gRPC
reports that path as the peer (``"unix:/…/c17"``), and :meth:`FrontDoor.peer_of` maps it back to
the credentials. Only this process can create sockets in that directory, so a caller cannot
forge a mapping; a connection the front door did not make has no credentials and is refused.
Bytes are relayed unchanged (HTTP/2 end to end) by one asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import tempfile
import threading

from ztid.agent.selectors import PeerCred
from ztid.errors import SourceError

__all__ = ["FrontDoor"]

_CRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_CHUNK = 1 << 16


class FrontDoor:
    """Listen on ``public_path``; relay each caller to the private gRPC socket, remembering its creds."""

    def __init__(self, public_path: str, *, mode: int = 0o666) -> None:
        self.public_path = os.path.abspath(public_path)
        self._mode = mode
        self.private_dir = tempfile.mkdtemp(prefix="ztid-agent-")
        os.chmod(self.private_dir, 0o700)
        self.backend_path = os.path.join(self.private_dir, "api.sock")
        self._peers: dict[str, PeerCred] = {}
        self._counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._bound = False

    def peer_of(self, grpc_peer: str) -> PeerCred | None:
        """The credentials behind a gRPC ``context.peer()`` string, or None if unknown."""
        path = grpc_peer.removeprefix("unix:")
        with self._lock:
            return self._peers.get(path)

    def start(self) -> None:
        """Bind the public socket and start relaying.

        Raises:
            SourceError: the socket cannot be bound (e.g. another live agent owns it).
        """
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _remove_stale(self.public_path)
            listener.bind(self.public_path)
            self._bound = True
            os.chmod(self.public_path, self._mode)
            listener.listen(128)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise SourceError(f"cannot listen on {self.public_path!r}: {exc.strerror or exc}") from exc
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                self._server = loop.run_until_complete(asyncio.start_unix_server(self._handle, sock=listener))
            except BaseException as exc:  # reported to start(); never leave it waiting
                failed.append(exc)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="ztid-agent-frontdoor", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            listener.close()
            raise SourceError(f"cannot serve {self.public_path!r}: {failed[0]}") from failed[0]

    def stop(self) -> None:
        """Stop accepting, drop every relayed connection, remove the sockets."""
        loop = self._loop
        if loop is not None and self._thread is not None:
            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    task.cancel()

            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)
            self._loop = None
        if self._bound:  # never remove a socket another agent owns
            try:
                os.unlink(self.public_path)
            except OSError:
                pass
            self._bound = False
        for name in os.listdir(self.private_dir) if os.path.isdir(self.private_dir) else ():
            try:
                os.unlink(os.path.join(self.private_dir, name))
            except OSError:
                pass
        try:
            os.rmdir(self.private_dir)
        except OSError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        except OSError:
            writer.close()
            return
        cred = PeerCred.of_pid(pid, uid, gid)
        bound = os.path.join(self.private_dir, f"c{next(self._counter)}")
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.bind(bound)
            upstream.setblocking(False)
            with self._lock:
                self._peers[bound] = cred
            await asyncio.get_running_loop().sock_connect(upstream, self.backend_path)
            up_reader, up_writer = await asyncio.open_unix_connection(sock=upstream)
        except OSError:
            upstream.close()
            self._forget(bound)
            writer.close()
            return
        pumps = [asyncio.ensure_future(_pump(reader, up_writer)), asyncio.ensure_future(_pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the agent is stopping: drop the connection quietly
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_writer):
                w.close()
            self._forget(bound)

    def _forget(self, bound: str) -> None:
        with self._lock:
            self._peers.pop(bound, None)
        try:
            os.unlink(bound)
        except OSError:
            pass


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


def _remove_stale(path: str) -> None:
    """Remove a leftover socket file nobody listens on; refuse to replace a live one or a non-socket."""
    if not os.path.lexists(path):
        return
    import stat

    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise OSError(17, f"{path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: nobody is listening
        return
    finally:
        probe.close()
    raise OSError(98, "another process is serving this socket")
