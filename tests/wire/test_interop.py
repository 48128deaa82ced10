"""Clients ztid did not write against the socket wrapper: `openssl s_client` and `curl` with client certificates."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from wire_helpers import sid, write_pem

from ztid.errors import PermissionDenied, TransportError

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURL = shutil.which("curl") or "/usr/bin/curl"


def _http(conn):
    """Answer one HTTP/1.1 request with the caller's SPIFFE ID (as ztid verified it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    body = f"{conn.peer.spiffe_id} is {conn.peer.component}\n".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _line(conn):
    """Echo one message upper-cased, then close (so `s_client -ign_eof` exits)."""
    conn.sendall(conn.recv(4096).upper())


def _files(pki, tmp, path):
    svid = pki.ca.issue(sid(path))
    leaf_pem = svid.chain_pem().split(b"-----END CERTIFICATE-----", 1)[0] + b"-----END CERTIFICATE-----\n"
    rest = svid.chain_pem()[len(leaf_pem):]
    return {
        "chain": write_pem(tmp, "chain", svid.chain_pem(), svid.key_pem()),
        "leaf": write_pem(tmp, "leaf", leaf_pem)[0],
        "intermediates": write_pem(tmp, "inter", rest)[0],
        "ca": write_pem(tmp, "ca", pki.ca.bundle().to_pem())[0],
    }


def test_openssl_s_client_with_a_client_certificate(pki, policy, serve, tmp):
    server = serve(pki.source("/data-store/main"), policy, handler=_line)
    f = _files(pki, tmp, "/training/job-7")
    port = str(server.address[1])
    out = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-cert", f["leaf"], "-cert_chain", f["intermediates"],
         "-key", f["chain"][1], "-CAfile", f["ca"], "-verify_return_error", "-tls1_3", "-quiet", "-ign_eof"],
        input=b"hello from openssl\n", capture_output=True, timeout=30,
    )
    assert b"HELLO FROM OPENSSL" in out.stdout, out.stderr.decode(errors="replace")
    assert server.peers[-1].component == "training"
    # without a client certificate the handshake is refused
    out = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", f["ca"], "-quiet", "-ign_eof"],
        input=b"hello\n", capture_output=True, timeout=30,
    )
    assert b"HELLO" not in out.stdout
    assert isinstance(server.wait_reject(), TransportError)


def test_curl_with_a_client_certificate(pki, policy, serve, tmp):
    from ztid.source import StaticSource

    source = StaticSource(pki.ca.issue(sid("/data-store/main"), dns_names=["data-store.local"]), pki.bundles)
    server = serve(source, policy, handler=_http)
    port = server.address[1]
    f = _files(pki, tmp, "/training/job-7")
    base = [CURL, "-sS", "--max-time", "20", "--cacert", f["ca"], "--resolve", f"data-store.local:{port}:127.0.0.1"]
    out = subprocess.run(base + ["--cert", f["chain"][0], "--key", f["chain"][1], f"https://data-store.local:{port}/"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout == f"{sid('/training/job-7')} is training\n".encode()
    # inference may not reach the data store: curl gets no response at all
    g = _files(pki, tmp, "/inference/llm")
    out = subprocess.run(base + ["--cert", g["chain"][0], "--key", g["chain"][1], f"https://data-store.local:{port}/"],
                         capture_output=True, timeout=30)
    assert out.returncode != 0 and out.stdout == b""
    exc = server.wait_reject()
    assert isinstance(exc, PermissionDenied) and exc.decision.code == "explicit_deny"


@pytest.mark.parametrize("tls12", [False, True])
def test_openssl_tls_versions(pki, policy, serve, tmp, tls12):
    """TLS 1.2 is refused unless the listener opted in."""
    server = serve(pki.source("/data-store/main"), policy, handler=_line)
    f = _files(pki, tmp, "/training/job-7")
    args = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{server.address[1]}", "-cert", f["leaf"], "-cert_chain", f["intermediates"],
            "-key", f["chain"][1], "-CAfile", f["ca"], "-quiet", "-ign_eof", "-tls1_2" if tls12 else "-tls1_3"]
    out = subprocess.run(args, input=b"v\n", capture_output=True, timeout=30)
    assert (b"V" in out.stdout) is (not tls12)
    if tls12:
        server12 = serve(pki.source("/data-store/main"), policy, allow_tls12=True, handler=_line)
        args[3] = f"127.0.0.1:{server12.address[1]}"
        out = subprocess.run(args, input=b"v\n", capture_output=True, timeout=30)
        assert b"V" in out.stdout
