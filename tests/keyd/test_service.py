"""KeyService without the transport: dataset specs and registry files (parsers, fuzzed), fail-closed logging, leases."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyd_helpers import INFERENCE, PIPELINE, ROOT, TRAINING

from ztid.crypto.keys import Keyring
from ztid.errors import AuditError, ConfigError, PermissionDenied, UsageError
from ztid.keyd.datasets import DatasetRecord, DatasetRegistry, parse_dataset_spec
from ztid.keyd.service import Caller, KeyService
from ztid.policy import load_policy


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_dataset_spec_parser_raises_only_usage_errors(text):
    try:
        rec = parse_dataset_spec(text)
    except UsageError as exc:
        assert "NAME=TARGET" in str(exc) or "must be" in str(exc)
    else:
        again = parse_dataset_spec(f"{rec.dataset}={rec.target}" + (f"@{rec.tenant}" if rec.tenant else ""))
        assert again == rec


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_registry_file_parser_raises_only_config_errors(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("reg") / "datasets.json"
    for candidate in (doc, {"format": "ztid-keyd-datasets/v1", "datasets": doc}):
        path.write_text(json.dumps(candidate))
        try:
            DatasetRegistry(path)
        except ConfigError:
            pass


def test_registry_persists_and_refuses_to_move_a_dataset(tmp_path):
    reg = DatasetRegistry(tmp_path / "d.json", records=(parse_dataset_spec("imagenet=data-store@vision"),))
    reg.register(DatasetRecord("coco", "data-store"))
    again = DatasetRegistry(tmp_path / "d.json")
    assert again.get("imagenet") == DatasetRecord("imagenet", "data-store", "vision") and again.get("coco").tenant is None
    with pytest.raises(ConfigError, match="edit the registry"):
        DatasetRegistry(tmp_path / "d.json", records=(parse_dataset_spec("imagenet=feature-store"),))


def _service(tmp_path, log, **kw):
    return KeyService(policy=load_policy(ROOT / "policy.yaml"), backend=Keyring.create(tmp_path / "k.json"), log=log, **kw)


def _caller(policy, sid, *, left=dt.timedelta(hours=1)):
    return Caller(policy.identify(sid), dt.datetime.now(dt.timezone.utc) + left)


class _BrokenLog:
    def record(self, *a, **kw):
        raise AuditError("disk full")


def test_a_log_that_cannot_write_releases_nothing(tmp_path):
    svc = _service(tmp_path, _BrokenLog())
    with pytest.raises(AuditError):
        svc.new_key(_caller(svc.policy, PIPELINE), "imagenet", "data-store")
    assert svc.registry.get("imagenet") is None  # nothing happened that the log does not show


def test_lease_bounds_and_expired_caller(tmp_path):
    svc = _service(tmp_path, None, max_lease=dt.timedelta(seconds=30))
    new = svc.new_key(_caller(svc.policy, PIPELINE), "imagenet", "data-store")
    r = svc.unwrap_key(_caller(svc.policy, TRAINING), "imagenet", new.key_id, new.version, new.wrapped_key)
    assert r.data_key == new.data_key and 0 < r.lease_seconds <= 30
    r = svc.unwrap_key(_caller(svc.policy, TRAINING, left=dt.timedelta(seconds=10)), "imagenet", new.key_id, new.version, new.wrapped_key)
    assert r.lease_seconds <= 10
    with pytest.raises(PermissionDenied) as exc:
        svc.unwrap_key(_caller(svc.policy, TRAINING, left=-dt.timedelta(seconds=1)), "imagenet", new.key_id, new.version, new.wrapped_key)
    assert exc.value.decision.code == "svid_expired"
    with pytest.raises(PermissionDenied) as exc:
        svc.unwrap_key(_caller(svc.policy, INFERENCE), "imagenet", new.key_id, new.version, new.wrapped_key)
    assert exc.value.decision.code == "explicit_deny"
    with pytest.raises(PermissionDenied) as exc:
        svc.unwrap_key(_caller(svc.policy, TRAINING), "../etc", new.key_id, new.version, new.wrapped_key)
    assert exc.value.decision.code == "invalid_request"
    (tmp_path / "x").mkdir()
    with pytest.raises(UsageError):
        _service(tmp_path / "x", None, max_lease=dt.timedelta(0))


def test_operator_registered_datasets_only(tmp_path):
    svc = _service(tmp_path, None, register_on_new=False,
                   registry=DatasetRegistry(records=(parse_dataset_spec("imagenet=data-store"),)))
    assert svc.new_key(_caller(svc.policy, PIPELINE), "imagenet", "data-store").data_key
    with pytest.raises(PermissionDenied) as exc:
        svc.new_key(_caller(svc.policy, PIPELINE), "other", "data-store")
    assert exc.value.decision.code == "unknown_dataset"
