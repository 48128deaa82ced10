"""ztid.enforce.tls over real loopback and unix-socket handshakes: who gets in, who does not, and why."""

from __future__ import annotations

import ssl
import threading

import pytest
from wire_helpers import PARTNER, TD, raw_client, refused, sid, write_pem

from ztid.enforce import tls
from ztid.enforce.require import configure, require
from ztid.errors import PermissionDenied, SvidError, TransportError
from ztid.source import StaticSource
from ztid.spiffeid import SpiffeId
from ztid.svid import X509Svid
from ztid.testing import TestCA


def attempt(make) -> bool:
    """True when the server refused: the handshake failed or the connection closed before any byte."""
    try:
        conn = make()
    except (ssl.SSLError, OSError):
        return True
    return refused(conn)


def test_allowed_peer_is_verified_mapped_and_current_in_its_scope(pki, policy, serve):
    server = serve(pki.source("/data-store/main"), policy)
    client = pki.source("/training/job-7")
    with tls.connect(server.address, source=client, policy=policy, expect="data-store", action="read") as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b"HELLO"
        assert conn.version() == "TLSv1.3"
        assert conn.peer.component == "data-store"
        assert conn.peer_svid.spiffe_id == SpiffeId.parse(sid("/data-store/main"))
        assert conn.decision.allowed and conn.decision.rule == "components.training.allow.data-store"
    peer = server.peers[0]
    assert (peer.component, peer.workload, peer.spiffe_id) == ("training", "job-7", SpiffeId.parse(sid("/training/job-7")))
    assert server.required[0] == peer  # `with conn:` made the peer current for ztid.require


def test_require_inside_the_connection_uses_the_peer(pki, policy, serve):
    answers: list[str] = []

    def handler(conn):
        for action in ("read", "write"):
            try:
                require(action)
                answers.append(f"{action}:ok")
            except PermissionDenied as exc:
                answers.append(f"{action}:{exc.decision.code}")
        conn.sendall(b"done")

    configure(policy=policy, self_id=sid("/data-store/main"))
    try:
        server = serve(pki.source("/data-store/main"), policy, handler=handler)
        with tls.connect(server.address, source=pki.source("/training/job-7"), policy=policy, expect="data-store") as conn:
            assert conn.recv(10) == b"done"
    finally:
        configure()
    assert answers == ["read:ok", "write:no_matching_rule"]


def test_denied_peer_is_closed_before_any_byte(pki, policy, serve):
    server = serve(pki.source("/data-store/main"), policy)
    conn = tls.connect(server.address, source=pki.source("/inference/llm"), policy=policy, expect="data-store")
    assert refused(conn)
    exc = server.wait_reject()
    assert isinstance(exc, PermissionDenied)
    assert exc.decision.code == "explicit_deny" and exc.decision.rule == "components.inference.deny.data-store"
    assert server.peers == []


def test_client_refuses_an_action_the_policy_denies_before_sending(pki, policy, serve):
    server = serve(pki.source("/data-store/main"), policy)
    with pytest.raises(PermissionDenied) as info:
        tls.connect(server.address, source=pki.source("/training/job-7"), policy=policy, expect="data-store", action="write")
    assert info.value.decision.code == "no_matching_rule"


def test_client_refuses_a_server_that_is_not_the_expected_component(pki, policy, serve):
    server = serve(pki.source("/data-store/main"), policy)
    client = pki.source("/training/job-7")
    with pytest.raises(PermissionDenied) as info:
        tls.connect(server.address, source=client, policy=policy, expect="registry")
    assert info.value.decision.code == "unexpected_peer"
    assert "data-store" in info.value.decision.reason
    with pytest.raises(PermissionDenied):
        tls.connect(server.address, source=client, policy=policy, expect=SpiffeId.parse(sid("/data-store/other")))
    tls.connect(server.address, source=client, policy=policy, expect=SpiffeId.parse(sid("/data-store/main"))).close()


def test_no_client_certificate_is_refused(pki, policy, serve, tmp):
    server = serve(pki.source("/data-store/main"), policy)
    cafile, _ = write_pem(tmp, "bundle", pki.bundles[pki.ca.trust_domain].to_pem())
    assert attempt(lambda: raw_client(server.address, cert=None, cafile=cafile))
    assert isinstance(server.wait_reject(), TransportError)


def test_expired_svid_is_refused(pki, policy, serve, tmp):
    server = serve(pki.source("/data-store/main"), policy)
    cafile, _ = write_pem(tmp, "bundle", pki.ca.bundle().to_pem())
    expired = pki.ca.expired(sid("/training/job-7"))
    cert = write_pem(tmp, "expired", expired.chain_pem(), expired.key_pem())
    assert attempt(lambda: raw_client(server.address, cert=cert, cafile=cafile))
    exc = server.wait_reject()
    assert isinstance(exc, TransportError) and "expired" in str(exc)


def test_untrusted_root_is_refused(pki, policy, serve, tmp):
    server = serve(pki.source("/data-store/main"), policy)
    cafile, _ = write_pem(tmp, "bundle", pki.ca.bundle().to_pem())
    impostor = pki.ca.other_root()  # same trust domain name, a root nobody trusts
    svid = impostor.issue(sid("/training/job-7"))
    cert = write_pem(tmp, "impostor", svid.chain_pem(), svid.key_pem())
    assert attempt(lambda: raw_client(server.address, cert=cert, cafile=cafile))
    assert isinstance(server.wait_reject(), TransportError)


def test_federation_each_domain_verified_against_its_own_bundle(pki, federated_policy, serve, tmp):
    server = serve(pki.source("/data-store/main", federated=True), federated_policy)
    cafile, _ = write_pem(tmp, "bundle", pki.ca.bundle().to_pem())
    # The genuine partner workload, issued by the partner's CA, is verified and admitted.
    partner = pki.partner.issue(sid("/training/job-1", PARTNER))
    cert = write_pem(tmp, "partner", partner.chain_pem(), partner.key_pem())
    with raw_client(server.address, cert=cert, cafile=cafile) as conn:
        conn.sendall(b"hi")
        assert conn.recv(10) == b"HI"
    assert server.peers[-1].trust_domain.name == PARTNER and server.peers[-1].component == "training"
    # The forgery: a leaf naming partner.example, signed by OUR CA. OpenSSL accepts it (our root is
    # in the union of anchors); ztid must refuse it because partner IDs verify only against partner's bundle.
    forged = pki.ca.foreign(sid("/training/job-1", PARTNER))
    cert = write_pem(tmp, "forged", forged.chain_pem(), forged.key_pem())
    assert attempt(lambda: raw_client(server.address, cert=cert, cafile=cafile))
    exc = server.wait_reject()
    assert isinstance(exc, TransportError) and isinstance(exc.__cause__, SvidError)
    assert PARTNER in str(exc)
    assert len(server.peers) == 1


def test_client_refuses_a_forged_server_from_another_domains_ca(pki, federated_policy, serve):
    forged = pki.ca.foreign(sid("/data-store/main", PARTNER))
    server = serve(StaticSource(X509Svid.from_parts(forged.chain, forged.key), pki.federated), federated_policy)
    client = pki.source("/training/job-7", federated=True)
    with pytest.raises(TransportError) as info:
        tls.connect(server.address, source=client, policy=federated_policy, expect=SpiffeId.parse(sid("/data-store/main", PARTNER)))
    assert isinstance(info.value.__cause__, SvidError)


def test_rotation_mid_stream(pki, policy, serve):
    source = pki.source("/data-store/main")
    server = serve(source, policy)
    client = pki.source("/training/job-7")
    first = tls.connect(server.address, source=client, policy=policy, expect="data-store")
    first.sendall(b"a")
    assert first.recv(10) == b"A"
    # New SVID: new handshakes present it, the open connection carries on.
    source.update(pki.ca.issue(sid("/data-store/main")), pki.bundles)
    with tls.connect(server.address, source=client, policy=policy, expect="data-store") as second:
        assert second.peer_svid.leaf.serial_number != first.peer_svid.leaf.serial_number
        assert second.peer_svid.leaf.serial_number == source.snapshot().svid.leaf.serial_number
    first.sendall(b"b")
    assert first.recv(10) == b"B"
    # The trust domain moves to a new CA and the old one is dropped from the server's bundle.
    new_ca = TestCA.create(TD)
    both = pki.bundles.replace(pki.ca.bundle().with_x509_authorities([pki.ca.root, new_ca.root]))
    only_new = pki.bundles.replace(new_ca.bundle())
    source.update(new_ca.issue(sid("/data-store/main")), only_new)
    client.update(client.snapshot().svid, both)  # still holds an SVID from the removed CA
    assert attempt(lambda: tls.connect(server.address, source=client, policy=policy, expect="data-store"))
    assert isinstance(server.wait_reject(), TransportError)
    rotated = StaticSource(new_ca.issue(sid("/training/job-7")), both)
    with tls.connect(server.address, source=rotated, policy=policy, expect="data-store") as conn:
        conn.sendall(b"c")
        assert conn.recv(10) == b"C"
    first.sendall(b"d")  # established before the CA was dropped: works until closed
    assert first.recv(10) == b"D"
    first.close()


def test_tls13_issues_no_session_tickets(pki, policy, serve, tmp):
    server = serve(pki.source("/data-store/main"), policy)
    svid = pki.ca.issue(sid("/training/job-7"))
    cert = write_pem(tmp, "client", svid.chain_pem(), svid.key_pem())
    cafile, _ = write_pem(tmp, "bundle", pki.ca.bundle().to_pem())
    with raw_client(server.address, cert=cert, cafile=cafile) as conn:
        conn.sendall(b"x")
        assert conn.recv(10) == b"X"  # by now any NewSessionTicket would have arrived
        session = conn.session
    assert session is not None and not session.has_ticket
    with raw_client(server.address, cert=cert, cafile=cafile, session=session) as again:
        assert not again.session_reused


class _Switch:
    """A stand-in for a PolicyWatcher: ``.current`` is whatever the test sets."""

    def __init__(self, current):
        self.current = current


def test_tls12_resumed_session_is_reauthorized(pki, policy, serve, tmp):
    from ztid.policy import parse_policy
    from wire_helpers import ROOT

    text = (ROOT / "policy.yaml").read_text()
    revoked = parse_policy(text.replace("      data-store: [read]                   # read training data; never write it back\n", ""))
    switch = _Switch(policy)
    done = threading.Event()

    def handler(conn):  # echo once, then close_notify: OpenSSL keeps only cleanly shut sessions resumable
        try:
            conn.sendall(conn.recv(10).upper())
            conn.unwrap()
        except OSError:
            pass
        done.set()

    server = serve(pki.source("/data-store/main"), switch, allow_tls12=True, handler=handler)
    svid = pki.ca.issue(sid("/training/job-7"))
    cert = write_pem(tmp, "client", svid.chain_pem(), svid.key_pem())
    cafile, _ = write_pem(tmp, "bundle", pki.ca.bundle().to_pem())
    with raw_client(server.address, cert=cert, cafile=cafile, tls12=True) as conn:
        assert conn.version() == "TLSv1.2"
        conn.sendall(b"x")
        assert conn.recv(10) == b"X"
        session = conn.session
    assert done.wait(10)
    # The policy now refuses training on the data store; the client offers its session again.
    switch.current = revoked
    conn = raw_client(server.address, cert=cert, cafile=cafile, tls12=True, session=session)
    assert conn.session_reused  # OpenSSL resumed without a certificate exchange...
    assert refused(conn)  # ...and ztid still re-verified and re-decided: refused
    exc = server.wait_reject()
    assert isinstance(exc, PermissionDenied) and exc.decision.code == "no_matching_rule"
    assert exc.decision.source.spiffe_id == SpiffeId.parse(sid("/training/job-7"))  # the peer was re-identified
    assert len(server.peers) == 1


def test_unix_socket(pki, policy, serve, short_tmp):
    path = str(short_tmp / "ds.sock")
    serve(pki.source("/data-store/main"), policy, address=path)
    with tls.connect(path, source=pki.source("/training/job-7"), policy=policy, expect="data-store") as conn:
        conn.sendall(b"unix")
        assert conn.recv(10) == b"UNIX"


def test_server_context_follows_the_source_for_foreign_servers(pki, policy):
    """server_context() + authorize() for a server ztid does not run: rotation and CA removal still apply."""
    source = pki.source("/data-store/main")
    ctx = tls.server_context(source)
    import socket

    lsock = socket.create_server(("127.0.0.1", 0))
    results: list[object] = []

    def run():
        while True:
            try:
                raw, _ = lsock.accept()
            except OSError:
                return
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
                verdict = tls.authorize(conn, source=source, policy=policy)
                results.append(verdict.peer)
                conn.sendall(b"ok")
                conn.close()
            except Exception as exc:  # noqa: BLE001 - recorded for the assertions
                results.append(exc)
                raw.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    client = pki.source("/training/job-7")
    try:
        with tls.connect(lsock.getsockname(), source=client, policy=policy, expect="data-store") as conn:
            assert conn.recv(2) == b"ok"
            first_serial = conn.peer_svid.leaf.serial_number
        source.update(pki.ca.issue(sid("/data-store/main")), pki.bundles)
        with tls.connect(lsock.getsockname(), source=client, policy=policy, expect="data-store") as conn:
            assert conn.recv(2) == b"ok"
            assert conn.peer_svid.leaf.serial_number == source.snapshot().svid.leaf.serial_number != first_serial
        new_ca = TestCA.create(TD)
        source.update(new_ca.issue(sid("/data-store/main")), pki.bundles.replace(new_ca.bundle()))
        client.update(client.snapshot().svid, pki.bundles.replace(pki.ca.bundle().with_x509_authorities([pki.ca.root, new_ca.root])))
        assert attempt(lambda: tls.connect(lsock.getsockname(), source=client, policy=policy, expect="data-store"))
    finally:
        lsock.close()
    assert [type(r).__name__ for r in results[:2]] == ["Identity", "Identity"]
    assert len(results) == 2 or isinstance(results[2], (ssl.SSLError, OSError, TransportError))


def test_closed_source_fails_closed(pki, policy):
    source = pki.source("/training/job-7")
    source.close()
    from ztid.errors import SourceError

    with pytest.raises(SourceError):
        tls.connect(("127.0.0.1", 9), source=source, policy=policy, expect="data-store")


class _Broken:
    """A policy whose every method fails: an enforcement point that cannot decide must refuse."""

    digest = "broken"

    def identify(self, spiffe_id):
        raise RuntimeError("policy engine exploded")

    def __getattr__(self, name):
        raise RuntimeError("policy engine exploded")


def test_unexpected_errors_refuse_and_the_listener_keeps_serving(pki, policy, serve):
    switch = _Switch(_Broken())
    server = serve(pki.source("/data-store/main"), switch)
    client = pki.source("/training/job-7")
    assert attempt(lambda: tls.connect(server.address, source=client, policy=policy, expect="data-store"))
    exc = server.wait_reject()
    assert isinstance(exc, (TransportError, PermissionDenied))
    if isinstance(exc, PermissionDenied):
        assert exc.decision.code == "internal_error"
    switch.current = policy
    with tls.connect(server.address, source=client, policy=policy, expect="data-store") as conn:
        conn.sendall(b"ok")
        assert conn.recv(10) == b"OK"
    with pytest.raises(TransportError):
        tls.connect(server.address, source=client, policy=_Broken(), expect="data-store")


def test_verification_cache_is_per_bundle_set_object_and_never_holds_failures(pki):
    from cryptography.hazmat.primitives.serialization import Encoding

    from ztid.bundle import BundleSet
    from ztid.enforce._peer import PeerAuthorizer

    authz = PeerAuthorizer()
    svid = pki.ca.issue(sid("/training/job-7"))
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    bundles = pki.bundles
    assert authz.cached(chain[0], bundles) is None
    assert authz.verify(chain, bundles).spiffe_id == svid.spiffe_id
    assert authz.cached(chain[0], bundles).spiffe_id == svid.spiffe_id
    assert authz.cached(chain[0], BundleSet(list(bundles.values()))) is None  # equal, but another object: no hit
    forged = pki.ca.foreign(sid("/training/job-1", PARTNER))
    forged_chain = [c.public_bytes(Encoding.DER) for c in forged.chain]
    for _ in range(2):
        with pytest.raises(TransportError):
            authz.verify(forged_chain, pki.federated)
    assert authz.cached(forged_chain[0], pki.federated) is None
