"""Property tests for the small parsers of the wire layer: gRPC auth-context PEM, probe targets, method actions."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.enforce.grpc import _probe_address
from ztid.enforce.grpc_authz import default_action, presented_chain
from ztid.errors import TransportError, UsageError

_PEM = st.builds(
    lambda body, junk: b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n" + junk,
    st.one_of(st.binary(max_size=200), st.binary(max_size=150).map(base64.b64encode)),
    st.binary(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(leaf=st.lists(st.one_of(_PEM, st.binary(max_size=100)), max_size=2), chain=st.lists(st.one_of(_PEM, st.binary(max_size=100)), max_size=3))
def test_presented_chain_returns_der_or_a_transport_error(leaf, chain):
    try:
        ders = presented_chain({"x509_pem_cert": leaf, "x509_pem_cert_chain": chain})
    except TransportError as exc:
        assert "malformed PEM" in str(exc)
        return
    assert all(isinstance(d, bytes) for d in ders)
    assert len(ders) <= sum(b.count(b"-----BEGIN CERTIFICATE-----") for b in chain + leaf)


def test_presented_chain_puts_the_leaf_first_once():
    def pem(der):
        return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"

    leaf, inter = b"\x30\x03leaf", b"\x30\x03intr"
    assert presented_chain({"x509_pem_cert": [pem(leaf)], "x509_pem_cert_chain": [pem(leaf) + pem(inter)]}) == [leaf, inter]
    assert presented_chain({"x509_pem_cert": [pem(leaf)], "x509_pem_cert_chain": [pem(inter)]}) == [leaf, inter]
    assert presented_chain({"x509_pem_cert": [pem(leaf)]}) == [leaf]
    assert presented_chain({}) == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.builds(lambda h, p: f"{h}:{p}", st.text(max_size=10), st.text("0123456789٣", max_size=7))))
def test_probe_address_parses_or_refuses(target):
    try:
        addr = _probe_address(target)
    except UsageError:
        return
    if target.startswith("unix:"):
        assert isinstance(addr, str) and target.endswith(addr)
    else:
        host, port = addr
        assert target.endswith(f":{port:d}") or target.rsplit(":", 1)[1].lstrip("0") == str(port).lstrip("0")
        assert 0 <= port <= 65535 and host in target


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.booleans())
def test_default_action_is_read_only_for_unary_get_and_list(name, streaming):
    action = default_action(f"/pkg.Svc/{name}", request_streaming=streaming)
    method = name.rsplit("/", 1)[-1]  # the method is what follows the last "/"
    assert action == ("read" if not streaming and method.startswith(("Get", "List")) else "write")
