"""Key release over real mTLS: who gets a dataset's data key under the shipped policy, leases, and the decision log."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from keyd_helpers import INFERENCE, KEYD_NAME, PIPELINE, TD, TRAINING

from ztid.audit.log_verify import verify_log
from ztid.errors import KeyReleaseError
from ztid.keyd.client import KeyClient
from ztid.source import StaticSource
from ztid.svid import X509Svid
from ztid.testing import bundle_set


def _reason(exc_info) -> str:
    return str(exc_info.value)


def test_pipeline_creates_training_reads_inference_refused_with_policy_reason(keyd):
    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    assert len(new.lease.key()) == 32 and new.wrapped.version == 1
    assert k.service.registry.get("imagenet").target == "data-store"

    lease = k.client(TRAINING).unwrap_key("imagenet", new.wrapped.key_id, new.wrapped.version, new.wrapped.wrapped_key)
    assert lease.key() == new.lease.key()
    assert lease.info.decision_id

    with pytest.raises(KeyReleaseError) as exc:
        k.client(INFERENCE).unwrap_key("imagenet", new.wrapped.key_id, new.wrapped.version, new.wrapped.wrapped_key)
    assert exc.value.status == "PERMISSION_DENIED" and exc.value.reason_code == "explicit_deny"
    decision = k.service.policy.decide(INFERENCE, "data-store", "read")
    assert decision.reason in str(exc.value)  # the policy's own words reach the caller


def test_write_operations_need_write(keyd):
    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    training = k.client(TRAINING)
    for call in (lambda: training.new_key("other", "data-store"),
                 lambda: training.wrap_key("imagenet", b"k" * 32),
                 lambda: training.rewrap_key("imagenet", "default", 1, new.wrapped.wrapped_key)):
        with pytest.raises(KeyReleaseError) as exc:
            call()
        assert exc.value.reason_code == "no_matching_rule", str(exc.value)
    assert k.service.registry.get("other") is None  # a refused NewKey registers nothing
    wrapped = k.client(PIPELINE).wrap_key("imagenet", b"k" * 32)
    assert training.unwrap_key("imagenet", wrapped.key_id, wrapped.version, wrapped.wrapped_key).key() == b"k" * 32


def test_dataset_target_comes_from_the_registry_not_the_caller(keyd):
    k = keyd()
    pipeline = k.client(PIPELINE)
    new = pipeline.new_key("imagenet", "data-store")
    # The registry may read and write the data store, but it cannot move a dataset to a target it owns.
    with pytest.raises(KeyReleaseError) as exc:
        pipeline.new_key("imagenet", "feature-store")
    assert exc.value.reason_code == "dataset_target_mismatch"
    with pytest.raises(KeyReleaseError) as exc:
        k.client(TRAINING).unwrap_key("nope", "default", 1, new.wrapped.wrapped_key)
    assert exc.value.reason_code == "unknown_dataset"
    # A wrapped key is bound to its dataset: presenting it under another readable dataset fails.
    pipeline.new_key("coco", "data-store")
    with pytest.raises(KeyReleaseError) as exc:
        k.client(TRAINING).unwrap_key("coco", "default", 1, new.wrapped.wrapped_key)
    assert exc.value.reason_code == "key_unwrap_failed"


def test_lease_is_capped_by_svid_lifetime_and_maximum(keyd):
    k = keyd(max_lease=dt.timedelta(seconds=120))
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    w = new.wrapped
    long_lived = k.client(TRAINING, ttl=dt.timedelta(hours=2)).unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key)
    assert long_lived.info.seconds <= 120 and long_lived.remaining() <= 120
    short = k.client(TRAINING, ttl=dt.timedelta(seconds=40)).unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key)
    assert 0 < short.info.seconds <= 40 and short.remaining() <= 40


def test_expired_svid_is_refused(keyd):
    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    minted = k.ca.expired(TRAINING)
    source = StaticSource(X509Svid.parse(minted.chain_pem(), minted.key_pem()), bundle_set(k.ca))
    client = KeyClient(k.target, source=source, server_name=KEYD_NAME)
    k.clients.append(client)
    with pytest.raises(KeyReleaseError) as exc:
        client.unwrap_key("imagenet", new.wrapped.key_id, new.wrapped.version, new.wrapped.wrapped_key)
    assert exc.value.status in ("UNAVAILABLE", "UNAUTHENTICATED")  # the mTLS handshake refuses it


def test_caller_from_a_foreign_ca_is_refused(keyd):
    from ztid.testing import TestCA

    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    forged = TestCA.create(TD).issue(TRAINING)  # names our trust domain, signed by another CA
    client = KeyClient(k.target, source=StaticSource(forged, bundle_set(k.ca)), server_name=KEYD_NAME)
    k.clients.append(client)
    with pytest.raises(KeyReleaseError):
        client.unwrap_key("imagenet", new.wrapped.key_id, new.wrapped.version, new.wrapped.wrapped_key)


def test_cross_domain_forgery_passes_grpc_but_not_ztid_and_is_logged(keyd):
    from ztid.testing import TestCA

    partner = TestCA.create("partner.example")
    k = keyd(also_trust=(partner,))  # gRPC's handshake checks against the union of bundles: a first filter only
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    forged = partner.foreign(TRAINING)  # names our trust domain, signed by the partner's CA
    source = StaticSource(X509Svid.parse(forged.chain_pem(), forged.key_pem()), bundle_set(k.ca))
    client = KeyClient(k.target, source=source, server_name=KEYD_NAME)
    k.clients.append(client)
    with pytest.raises(KeyReleaseError) as exc:
        client.unwrap_key("imagenet", new.wrapped.key_id, new.wrapped.version, new.wrapped.wrapped_key)
    assert exc.value.status == "UNAUTHENTICATED" and exc.value.reason_code == "unauthenticated"
    last = [line for line in k.log_lines() if line.get("kind") == "decision"][-1]
    assert (last["allowed"], last["reason_code"], last["extra"]["method"]) == (False, "unauthenticated", "UnwrapKey")


def test_plain_grpc_caller_without_certificate_cannot_connect(keyd):
    from ztid._proto import keyservice_pb2 as pb
    from ztid._proto import keyservice_pb2_grpc as pb_grpc

    k = keyd()
    creds = grpc.ssl_channel_credentials(root_certificates=k.ca.bundle().to_pem())
    with grpc.secure_channel(k.target, creds, options=(("grpc.ssl_target_name_override", KEYD_NAME),)) as chan:
        with pytest.raises(grpc.RpcError):
            pb_grpc.KeyServiceStub(chan).UnwrapKey(pb.UnwrapKeyRequest(dataset="imagenet"), timeout=10)


def test_policy_revocation_stops_new_releases(keyd):
    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    w = new.wrapped
    training = k.client(TRAINING)
    assert training.unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key).key()
    k.revoke_training_read()
    with pytest.raises(KeyReleaseError) as exc:
        training.unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key)
    assert exc.value.reason_code == "no_matching_rule"


def test_every_answer_is_a_logged_decision(keyd, ca):
    k = keyd()
    new = k.client(PIPELINE).new_key("imagenet", "data-store")
    w = new.wrapped
    k.client(TRAINING).unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key)
    with pytest.raises(KeyReleaseError):
        k.client(INFERENCE).unwrap_key("imagenet", w.key_id, w.version, w.wrapped_key)
    k.log.close()
    lines = [line for line in k.log_lines() if line.get("kind") == "decision"]
    got = [(line["extra"]["method"], line["peer"], line["allowed"], line["reason_code"]) for line in lines]
    assert got == [
        ("NewKey", PIPELINE, True, "allowed"),
        ("UnwrapKey", TRAINING, True, "allowed"),
        ("UnwrapKey", INFERENCE, False, "explicit_deny"),
    ]
    assert all(line["extra"]["dataset"] == "imagenet" and line["target"] == "data-store" for line in lines)
    assert lines[1]["extra"]["lease_seconds"] > 0
    assert new.wrapped.decision_id == lines[0]["decision_id"]
    assert verify_log(k.log_path, bundle_set(ca)).ok
