"""The dev agent applies the Workload Endpoint/API rules: the security header, who gets which SVID."""

from __future__ import annotations

import os
import sys

import grpc
import pytest
from spiffe import WorkloadApiClient

from ztid._proto import workload_pb2 as pb
from ztid._proto import workload_pb2_grpc as pb_grpc

HEADER = [("workload.spiffe.io", "true")]

CALLS = {
    "FetchX509SVID": lambda stub, md: next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=md, timeout=5)),
    "FetchX509Bundles": lambda stub, md: next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=md, timeout=5)),
    "FetchJWTBundles": lambda stub, md: next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=md, timeout=5)),
    "FetchJWTSVID": lambda stub, md: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["x"]), metadata=md, timeout=5),
    "ValidateJWTSVID": lambda stub, md: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="x", svid="a.b.c"), metadata=md, timeout=5),
}


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture
def stub(agent):
    with grpc.insecure_channel("unix:" + agent.socket_path) as ch:
        yield pb_grpc.SpiffeWorkloadAPIStub(ch)


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("metadata", [None, [("workload.spiffe.io", "false")], [("workload.spiffe.io", "TRUE")]], ids=["absent", "false", "uppercase"])
def test_missing_or_wrong_security_header_is_invalid_argument(stub, method, metadata) -> None:
    assert _code(lambda: CALLS[method](stub, metadata)) == grpc.StatusCode.INVALID_ARGUMENT


def test_with_the_header_the_same_raw_client_is_served(stub) -> None:
    resp = CALLS["FetchX509SVID"](stub, HEADER)
    assert [s.spiffe_id for s in resp.svids] == ["spiffe://dev.local/training"]
    assert resp.svids[0].x509_svid and resp.svids[0].x509_svid_key and resp.svids[0].bundle
    assert dict(resp.federated_bundles) == {}


@pytest.mark.parametrize("method", sorted(m for m in CALLS if m != "ValidateJWTSVID"))
def test_caller_without_entry_is_permission_denied(start_agent, short_dir, entries_yaml, my_uid, method) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid + 1})))
    agent = start_agent(selectors=sel)
    with grpc.insecure_channel("unix:" + agent.socket_path) as ch:
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        assert _code(lambda: CALLS[method](stub, HEADER)) == grpc.StatusCode.PERMISSION_DENIED


def test_selectors_pick_svids_by_uid_and_exe_in_file_order(start_agent, short_dir, entries_yaml, my_uid) -> None:
    exe = os.path.realpath(sys.executable)
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(
        ("spiffe://dev.local/other-user", {"uid": my_uid + 1}),
        ("spiffe://dev.local/training", {"uid": my_uid, "gid": os.getgid()}),
        ("spiffe://dev.local/python", {"exe": os.path.dirname(exe) + "/*"}),
        ("spiffe://dev.local/not-python", {"exe": "/nonexistent/*"}),
        ("spiffe://dev.local/this-pid", {"pid": os.getpid()}),
    ))
    agent = start_agent(selectors=sel)
    with WorkloadApiClient(agent.endpoint, default_timeout=5) as client:
        ids = [str(s.spiffe_id) for s in client.fetch_x509_svids()]
        default = str(client.fetch_x509_svid().spiffe_id)
    assert ids == ["spiffe://dev.local/training", "spiffe://dev.local/python", "spiffe://dev.local/this-pid"]
    assert default == "spiffe://dev.local/training"


def test_jwt_for_an_id_the_caller_does_not_hold_is_permission_denied(stub) -> None:
    req = pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://dev.local/inference")
    assert _code(lambda: stub.FetchJWTSVID(req, metadata=HEADER, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    ok = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://dev.local/training"), metadata=HEADER, timeout=5)
    assert [s.spiffe_id for s in ok.svids] == ["spiffe://dev.local/training"]


@pytest.mark.parametrize("request_", [pb.JWTSVIDRequest(), pb.JWTSVIDRequest(audience=[""]),
                                      pb.JWTSVIDRequest(audience=["x"], spiffe_id="not an id")], ids=["no-aud", "empty-aud", "bad-id"])
def test_malformed_jwt_requests_are_invalid_argument(stub, request_) -> None:
    assert _code(lambda: stub.FetchJWTSVID(request_, metadata=HEADER, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


def test_validate_returns_subject_and_claims(stub) -> None:
    token = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["registry"]), metadata=HEADER, timeout=5).svids[0].svid
    resp = stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="registry", svid=token), metadata=HEADER, timeout=5)
    assert resp.spiffe_id == "spiffe://dev.local/training"
    assert resp.claims.fields["sub"].string_value == "spiffe://dev.local/training"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (pb.ValidateJWTSVIDRequest(audience="registry", svid=tampered), pb.ValidateJWTSVIDRequest(audience="", svid=token),
                pb.ValidateJWTSVIDRequest(audience="registry", svid="")):
        assert _code(lambda: stub.ValidateJWTSVID(bad, metadata=HEADER, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_connection_that_bypasses_the_front_door_has_no_credentials(agent) -> None:
    backend = agent._door.backend_path  # reachable only by this user; still refused: no SO_PEERCRED record
    with grpc.insecure_channel("unix:" + backend) as ch:
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        assert _code(lambda: CALLS["FetchX509SVID"](stub, HEADER)) == grpc.StatusCode.PERMISSION_DENIED


def test_server_reflection_lists_the_workload_api(agent) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel("unix:" + agent.socket_path) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for s in next(responses).list_services_response.service}
    assert "SpiffeWorkloadAPI" in names


def test_a_live_socket_is_not_stolen_by_a_second_agent(agent, start_agent, ca_dir) -> None:
    from ztid.agent import DevAgent
    from ztid.errors import SourceError

    with pytest.raises(SourceError, match="another process"):
        DevAgent(ca_dir, agent.socket_path, spiffe_id="spiffe://dev.local/x").start()
    with WorkloadApiClient(agent.endpoint, default_timeout=5) as client:  # the first agent still serves
        assert str(client.fetch_x509_svid().spiffe_id) == "spiffe://dev.local/training"
