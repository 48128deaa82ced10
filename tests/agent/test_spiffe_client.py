"""The spiffe package's own Workload API client against the dev agent: fetch, stream, rotate, JWT, bundles."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization
from spiffe import JwtSource, WorkloadApiClient, X509Source
from spiffe import TrustDomain as SpTrustDomain

from ztid.bundle import Bundle
from ztid.devca import DevCA
from ztid.spiffeid import SpiffeId
from ztid.svid import verify_x509_svid

TRAINING = "spiffe://dev.local/training"


def _client(agent) -> WorkloadApiClient:
    return WorkloadApiClient(agent.endpoint, default_timeout=5)


def test_fetch_x509_svid_chains_to_the_dev_ca(agent, ca_dir) -> None:
    with _client(agent) as client:
        svid = client.fetch_x509_svid()
        bundles = client.fetch_x509_bundles()
    assert str(svid.spiffe_id) == TRAINING
    chain = [c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain]
    verified = verify_x509_svid(b"".join(chain), DevCA.load(ca_dir).bundle())
    assert verified.spiffe_id == SpiffeId.parse(TRAINING)
    td_bundle = bundles.get_bundle_for_trust_domain(SpTrustDomain("dev.local"))
    assert td_bundle is not None
    assert set(td_bundle.x509_authorities) == {DevCA.load(ca_dir).root}


def test_x509_context_and_key_matches_leaf(agent) -> None:
    with _client(agent) as client:
        ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    pub = svid.private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pub == svid.leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ctx.x509_bundle_set.get_bundle_for_trust_domain(SpTrustDomain("dev.local")) is not None


def test_x509_source_streams_rotation_at_half_life(start_agent, wait) -> None:
    agent = start_agent(ttl=dt.timedelta(seconds=2))
    source = X509Source(socket_path=agent.endpoint, timeout_in_seconds=5)
    try:
        first = source.get_x509_context().default_svid.leaf.serial_number
        seen = {first}
        updates: list[int] = []
        source.subscribe_for_updates(lambda: updates.append(1))
        wait(lambda: len({*seen, source.get_x509_context().default_svid.leaf.serial_number}) > 1, what="a rotated SVID")
        second = source.get_x509_context().default_svid
        assert second.leaf.serial_number != first
        assert updates  # pushed on the open stream, not fetched again
        assert second.leaf.not_valid_after_utc > dt.datetime.now(dt.timezone.utc)
    finally:
        source.close()


def test_rotate_every_forces_rotation_with_a_long_ttl(start_agent, wait) -> None:
    agent = start_agent(rotate_every=dt.timedelta(seconds=1))
    source = X509Source(socket_path=agent.endpoint, timeout_in_seconds=5)
    try:
        first = source.get_x509_context().default_svid
        assert first.leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(minutes=50)
        wait(lambda: source.get_x509_context().default_svid.leaf.serial_number != first.leaf.serial_number,
             what="rotation forced by rotate_every")
    finally:
        source.close()


def test_jwt_svid_fetch_and_validate_round_trip(agent) -> None:
    with _client(agent) as client:
        jwt = client.fetch_jwt_svid({"data-store"})
        assert str(jwt.spiffe_id) == TRAINING
        assert jwt.audience == {"data-store"}
        validated = client.validate_jwt_svid(jwt.token, "data-store")
        assert str(validated.spiffe_id) == TRAINING
        with pytest.raises(Exception) as info:
            client.validate_jwt_svid(jwt.token, "registry")
        assert "INVALID_ARGUMENT" in str(info.value)


def test_jwt_bundles_are_jwks_with_only_jwt_keys(agent, ca_dir) -> None:
    with _client(agent) as client:
        bundles = client.fetch_jwt_bundles()
    ca = DevCA.load(ca_dir)
    b = bundles.get_bundle_for_trust_domain(SpTrustDomain("dev.local"))
    assert b is not None
    assert set(b.jwt_authorities) == {ca.jwt_kid}


def test_jwt_source_fetches_and_its_bundle_validates_our_token(agent, ca_dir) -> None:
    source = JwtSource(socket_path=agent.endpoint, timeout_in_seconds=5)
    try:
        jwt = source.fetch_svid({"registry"})
        assert str(jwt.spiffe_id) == TRAINING
        # our own validator accepts it with the bundle the agent serves on disk
        from ztid.jwtsvid import validate_jwt_svid

        ours = validate_jwt_svid(jwt.token, Bundle.from_jwks((ca_dir / "bundle.json").read_bytes(), trust_domain="dev.local"), "registry")
        assert str(ours.spiffe_id) == TRAINING
    finally:
        source.close()


def test_jwt_bundles_wire_document_is_a_spiffe_bundle(agent) -> None:
    import grpc

    from ztid._proto import workload_pb2 as pb
    from ztid._proto import workload_pb2_grpc as pb_grpc

    with grpc.insecure_channel("unix:" + agent.socket_path) as ch:
        stream = pb_grpc.SpiffeWorkloadAPIStub(ch).FetchJWTBundles(pb.JWTBundlesRequest(), metadata=[("workload.spiffe.io", "true")], timeout=5)
        first = next(stream)
        stream.cancel()
    doc = json.loads(first.bundles["spiffe://dev.local"])
    assert doc["keys"] and all(k["use"] == "jwt-svid" for k in doc["keys"])
