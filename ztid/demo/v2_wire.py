"""Demo chapter 2: identities on the wire. Dev agents issue SVIDs; a gRPC registry and a socket data store
enforce the policy; the foreign trust domain fails its handshake; SVIDs rotate while traffic carries on."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from cryptography import x509

from ztid.agent import DevAgent
from ztid.bundle import BundleSet
from ztid.enforce import tls
from ztid.enforce.grpc import AuthzInterceptor, secure_channel, server_credentials
from ztid.enforce.require import configure, require
from ztid.errors import ZtidError
from ztid.source import StaticSource
from ztid.source_workload import WorkloadApiSource

TD = "ai-platform.example"
ROLES = {  # workload -> (SPIFFE ID, DNS SAN); each gets its own agent socket, as each pod would
    "registry": (f"spiffe://{TD}/registry/main", ("registry.ml",)),
    "data-store": (f"spiffe://{TD}/data-store/shard-0", ()),
    "training": (f"spiffe://{TD}/training/job-7", ()),
    "inference": (f"spiffe://{TD}/inference/web", ()),
}


def _registry(policy, source) -> tuple[grpc.Server, int]:  # type: ignore[no-untyped-def]
    models: dict[bytes, bytes] = {}

    def put_model(request: bytes, context: grpc.ServicerContext) -> bytes:
        name, _, blob = request.partition(b"=")
        models[name] = blob
        return b"stored " + name

    def get_model(request: bytes, context: grpc.ServicerContext) -> bytes:
        return models.get(request, b"")

    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[AuthzInterceptor(policy, source)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("ml.Registry", {
        "GetModel": grpc.unary_unary_rpc_method_handler(get_model),    # Get*: read
        "PutModel": grpc.unary_unary_rpc_method_handler(put_model)})])  # anything else: write
    port = server.add_secure_port("127.0.0.1:0", server_credentials(source))
    server.start()
    return server, port


def _data_store(policy, source, stop: threading.Event, rejected: list[str]) -> tls.Listener:  # type: ignore[no-untyped-def]
    configure(policy=policy, self_id=source.snapshot().svid.spiffe_id)
    listener = tls.listen(("127.0.0.1", 0), source=source, policy=policy,
                          on_reject=lambda exc, addr: rejected.append(str(exc)))

    def handle(conn: tls.ZtidSocket) -> None:
        with conn:  # the peer is visible to require() inside this block
            while not stop.is_set():
                line = conn.recv(64)
                if not line:
                    return
                try:
                    require("read")
                    # Echo the serial of the client certificate this connection was authorized with.
                    serial = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number
                    conn.sendall(f"shard-0000: 4096 samples (client cert {serial:x}"[:56].encode() + b"...)\n")
                except ZtidError as exc:
                    conn.sendall(f"refused: {exc}\n".encode())

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _peer = listener.accept()
            except (ZtidError, OSError):
                if stop.is_set():
                    return
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _call(channel, method: str, payload: bytes) -> str:  # type: ignore[no-untyped-def]
    try:
        return "OK: " + channel.unary_unary(f"/ml.Registry/{method}")(payload, timeout=10).decode()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"


def _read(conn: tls.ZtidSocket) -> str:
    conn.sendall(b"READ\n")
    return conn.recv(200).decode().strip()


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Serve, call, refuse, rotate; return whether every outcome matched the policy."""
    policy, ok = story.policy, True
    ca_dir = story.workdir / "ca"
    sock_dir = Path(tempfile.mkdtemp(prefix="ztw"))  # unix socket paths must stay short
    story.title("2. Identity on the wire: dev agents, a gRPC registry, a socket data store")
    with contextlib.ExitStack() as stack:
        sources = {}
        for role, (sid, dns) in ROLES.items():
            rotate = dt.timedelta(seconds=1) if role == "training" else None
            agent = stack.enter_context(DevAgent(ca_dir, sock_dir / f"{role}.sock", spiffe_id=sid, dns_names=dns,
                                                 ttl=dt.timedelta(minutes=10), rotate_every=rotate))
            sources[role] = stack.enter_context(contextlib.closing(WorkloadApiSource(agent.endpoint)))
        story.say(f"4 dev agents (ztid agent) on unix sockets in {sock_dir}; training's rotates its SVID every second")
        stop = threading.Event()
        stack.callback(stop.set)
        server, port = _registry(policy, sources["registry"])
        stack.callback(server.stop, None)
        rejected: list[str] = []
        listener = _data_store(policy, sources["data-store"], stop, rejected)
        stack.callback(listener.close)

        rows = []
        for who, method, payload, expect in (
            ("training", "PutModel", b"resnet18=weights-v1", True),
            ("inference", "GetModel", b"resnet18", True),
            ("inference", "PutModel", b"resnet18=backdoor", False),
        ):
            with secure_channel(f"127.0.0.1:{port}", source=sources[who], policy=policy, expect="registry",
                                server_name="registry.ml") as ch:
                out = _call(ch, method, payload)
            ok &= out.startswith("OK") == expect
            rows.append((who, f"registry gRPC {method}", out))
        with tls.connect(listener.address, source=sources["training"], policy=policy, expect="data-store") as conn:
            out = _read(conn)
        ok &= out.startswith("shard")
        rows.append(("training", "data-store socket READ", out))
        for who, src in (("inference", sources["inference"]),
                         ("partner.example", StaticSource(story.notes["partner"].issue("spiffe://partner.example/training/eval"),
                                                          # it even trusts our CA: the refusal is the data store's
                                                          BundleSet([story.notes["partner"].bundle(), story.notes["ca"].bundle()])))):
            before = len(rejected)
            try:
                with tls.connect(listener.address, source=src, policy=policy, expect="data-store", timeout=5) as conn:
                    out = _read(conn)
            except (ZtidError, OSError) as exc:  # TLS 1.3: the server's verdict arrives with the first read
                out = f"{type(exc).__name__}: {str(exc)[:60]}"
            time.sleep(0.05)
            if len(rejected) > before:
                out = "refused by the data store: " + rejected[-1][:110]
            ok &= not out.startswith("shard")
            rows.append((who, "data-store socket READ", out))
        story.table(["caller", "call", "result"], rows)

        story.say("\nRotation under live traffic (training's agent rotates every second):")
        conn = tls.connect(listener.address, source=sources["training"], policy=policy, expect="data-store")
        with conn:
            first = sources["training"].snapshot().svid.leaf.serial_number
            deadline = time.monotonic() + 10
            while sources["training"].snapshot().svid.leaf.serial_number == first and time.monotonic() < deadline:
                time.sleep(0.1)
            second = sources["training"].snapshot().svid.leaf.serial_number
            old_conn = _read(conn)
        with tls.connect(listener.address, source=sources["training"], policy=policy, expect="data-store") as conn2:
            new_conn = _read(conn2)
        rotated = first != second
        ok &= rotated and f"{first:x}"[:12] in old_conn and f"{second:x}"[:12] in new_conn
        story.table(["", "training's current SVID", "data store's answer (the cert it authorized)"], [
            ("connection opened before rotation", f"{first:x}"[:16] + "...", old_conn),
            ("new connection after rotation", f"{second:x}"[:16] + "...", new_conn),
        ])
        story.say("The open connection keeps working until closed; new handshakes present the new SVID.")
    configure()
    return ok
