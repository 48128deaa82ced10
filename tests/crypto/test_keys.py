"""The local KEK keyring: permissions, atomic file, rotation, archived versions, rewrap, binding."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.crypto.keys import DEK_SIZE, KekBackend, Keyring, Wrapped, dek_context, new_data_key
from ztid.errors import DecryptionError, KeyringError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ring.json"


def test_create_writes_a_0600_file_and_refuses_to_overwrite(path):
    ring = Keyring.create(path, key_ids=("default", "pii"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert ring.key_ids == ("default", "pii") and ring.versions("pii") == (1,)
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path)
    assert isinstance(ring, KekBackend)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620, 0o602])
def test_load_refuses_group_or_other_access(path, mode):
    Keyring.create(path)
    os.chmod(path, mode)
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.load(path)
    os.chmod(path, 0o600)
    assert Keyring.load(path).key_ids == ("default",)


def test_symlinked_keyring_is_refused(path, tmp_path):
    Keyring.create(path)
    (tmp_path / "link.json").symlink_to(path)
    with pytest.raises(KeyringError, match="cannot open"):
        Keyring.load(tmp_path / "link.json")


def test_wrap_unwrap_and_context_binding(path):
    ring = Keyring.create(path)
    dek = new_data_key()
    assert len(dek) == DEK_SIZE
    version, wrapped = ring.wrap("default", dek, context=dek_context("imagenet"))
    assert version == 1 and len(wrapped) == 12 + 32 + 16
    assert ring.unwrap("default", 1, wrapped, context=dek_context("imagenet")) == dek
    for bad in (dek_context("cifar"), b""):
        with pytest.raises(DecryptionError, match="^decryption failed$"):
            ring.unwrap("default", 1, wrapped, context=bad)
    tampered = bytearray(wrapped)
    tampered[20] ^= 1
    with pytest.raises(DecryptionError):
        ring.unwrap("default", 1, bytes(tampered), context=dek_context("imagenet"))
    with pytest.raises(DecryptionError):
        ring.unwrap("default", 1, wrapped[:10])


def test_rotation_min_version_and_rewrap(path):
    ring = Keyring.create(path)
    dek = new_data_key()
    old = ring.wrap("default", dek)
    assert ring.rotate("default") == 2 and ring.primary_version("default") == 2
    new = ring.wrap("default", dek)
    assert new.version == 2 and ring.unwrap("default", 1, old.wrapped) == dek  # old versions still decrypt
    # a wrapped key cannot be relabelled with another version: the version is in the AAD
    with pytest.raises(DecryptionError):
        ring.unwrap("default", 2, old.wrapped)
    rewrapped = ring.rewrap("default", old.version, old.wrapped)
    assert rewrapped.version == 2 and ring.unwrap("default", 2, rewrapped.wrapped) == dek
    assert ring.rewrap("default", 2, rewrapped.wrapped) == rewrapped  # already newest: unchanged
    ring.set_min_decrypt_version("default", 2)
    with pytest.raises(KeyringError, match="archived"):
        ring.unwrap("default", 1, old.wrapped)
    with pytest.raises(KeyringError, match="archived"):
        ring.rewrap("default", 1, old.wrapped)
    with pytest.raises(KeyringError, match="no version 3"):
        ring.unwrap("default", 3, new.wrapped)
    for bad in (0, 3, "2"):
        with pytest.raises(KeyringError, match=r"must be in \[1, 2\]"):
            ring.set_min_decrypt_version("default", bad)
    reloaded = Keyring.load(path)
    assert reloaded.min_decrypt_version("default") == 2 and reloaded.versions("default") == (1, 2)


def test_changes_by_another_process_take_effect_at_once(path):
    ring = Keyring.create(path)
    dek = new_data_key()
    wrapped = ring.wrap("default", dek)
    code = (
        "import sys; from ztid.crypto.keys import Keyring; r = Keyring.load(sys.argv[1]); "
        "r.rotate('default'); r.set_min_decrypt_version('default', 2)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with pytest.raises(KeyringError, match="archived"):
        ring.unwrap("default", 1, wrapped.wrapped)
    assert ring.wrap("default", dek).version == 2


def test_unknown_key_ids_and_bad_data_keys(path):
    ring = Keyring.create(path)
    with pytest.raises(KeyringError, match="unknown key id 'nope'"):
        ring.wrap("nope", new_data_key())
    with pytest.raises(KeyringError, match="key id must be"):
        ring.rotate("bad id")
    for dek in (b"short", "x" * 32, bytes(33)):
        with pytest.raises(KeyringError, match="32 bytes"):
            ring.wrap("default", dek)
    ring.add_key("pii")
    with pytest.raises(KeyringError, match="already exists"):
        ring.add_key("pii")


def test_wrap_counter_is_persisted_and_limited(path, monkeypatch):
    ring = Keyring.create(path)
    for _ in range(3):
        ring.wrap("default", new_data_key())
    assert json.loads(path.read_text())["keys"]["default"]["versions"]["1"]["wraps"] == 3
    monkeypatch.setattr("ztid.crypto.keys.MAX_WRAPS", 3)
    with pytest.raises(KeyringError, match="rotate it"):
        ring.wrap("default", new_data_key())
    ring.rotate("default")
    assert ring.wrap("default", new_data_key()).version == 2


def _write(path, doc):
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("format"), "exactly 'format' and 'keys'"),
        (lambda d: d.update(format="v0"), "format: must be"),
        (lambda d: d["keys"]["default"].update(min_decrypt_version=5), "min_decrypt_version"),
        (lambda d: d["keys"]["default"]["versions"]["1"].update(key="!!"), "not base64"),
        (lambda d: d["keys"]["default"]["versions"]["1"].update(key="AAAA"), "32 bytes"),
        (lambda d: d["keys"]["default"]["versions"]["1"].update(wraps=-1), "wraps"),
        (lambda d: d["keys"]["default"]["versions"].update({"01": {}}), "positive integer"),
        (lambda d: d["keys"].update({"bad id": {}}), "invalid key id"),
        (lambda d: d["keys"]["default"].update(extra=1), "exactly 'min_decrypt_version'"),
    ],
)
def test_malformed_keyring_files_are_located(path, mutate, message):
    Keyring.create(path)
    doc = json.loads(path.read_text())
    mutate(doc)
    _write(path, doc)
    with pytest.raises(KeyringError, match=message):
        Keyring.load(path)


def test_not_json(path):
    path.write_text("{nope")
    os.chmod(path, 0o600)
    with pytest.raises(KeyringError, match="not valid JSON"):
        Keyring.load(path)


def test_wrapped_is_a_named_tuple():
    assert Wrapped(1, b"x") == (1, b"x")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**33) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json, field=st.sampled_from(["format", "keys", "default", "versions", "1", "key", "wraps", "min"]))
def test_fuzz_keyring_documents_only_raise_keyring_errors(tmp_path, doc, field):
    path = tmp_path / "fuzz.json"
    valid = {"format": "ztid-keyring/v1", "keys": {"default": {"min_decrypt_version": 1, "versions": {
        "1": {"key": "A" * 43 + "=", "created": "x", "wraps": 0}}}}}
    candidates = [doc, {**valid, "keys": {"default": doc}}, {**valid, "keys": {"default": {
        "min_decrypt_version": 1, "versions": {"1": doc}}}}, {**valid, field: doc}]
    for candidate in candidates:
        _write(path, candidate)
        try:
            ring = Keyring.load(path)
        except KeyringError:
            continue
        for key_id in ring.key_ids:  # anything accepted is usable (an empty keyring is valid)
            assert ring.unwrap(key_id, ring.primary_version(key_id), ring.wrap(key_id, bytes(32)).wrapped) == bytes(32)
