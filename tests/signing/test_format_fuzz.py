"""Fuzzing the signature-file and statement parsers: only SigningError, never an accept of a mutation."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztid.errors import SigningError
from ztid.signing import sign_model, verify_model
from ztid.signing_format import format_time, parse_bundle, parse_statement, parse_time

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def signed(tmp_path_factory, ca):
    """One small signed model shared by the properties (they only read it)."""
    root = tmp_path_factory.mktemp("fuzz") / "model"
    root.mkdir()
    (root / "a.bin").write_bytes(b"a" * 100)
    (root / "b.json").write_text("{}")
    svid = ca.issue("spiffe://ai-platform.example/training/fuzz")
    sig = sign_model(root, svid).signature
    return root, sig, sig.read_bytes()


def _only_signing_error(fn, *args):
    try:
        fn(*args)
    except SigningError:
        pass


@FUZZ
@given(st.binary(max_size=2048))
def test_parse_bundle_random_bytes(data):
    _only_signing_error(parse_bundle, data)


@FUZZ
@given(json_values)
def test_parse_bundle_random_json(doc):
    _only_signing_error(parse_bundle, json.dumps(doc).encode())


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    return [(_replace(v, rest, value) if i == head else v) for i, v in enumerate(doc)]


@FUZZ
@given(data=st.data())
def test_parse_bundle_structural_mutations(signed, data):
    doc = json.loads(signed[2])
    path = data.draw(st.sampled_from(list(_paths(doc))))
    _only_signing_error(parse_bundle, json.dumps(_replace(doc, path, data.draw(json_values))).encode())


@FUZZ
@given(data=st.data())
def test_parse_statement_structural_mutations(signed, data):
    doc = json.loads(signed[2])
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    path = data.draw(st.sampled_from(list(_paths(statement))))
    mutated = json.dumps(_replace(statement, path, data.draw(json_values))).encode()
    _only_signing_error(parse_statement, mutated)


@FUZZ
@given(st.binary(max_size=1024))
def test_parse_statement_random_bytes(data):
    _only_signing_error(parse_statement, data)


@FUZZ
@given(data=st.data())
def test_a_byte_flip_in_the_signature_file_never_changes_what_is_accepted(signed, bundles, policy, tmp_path_factory, data):
    """Every single-byte change is refused, or (in members nothing reads, or non-canonical base64 padding
    bits) accepted with exactly the original signer and digests."""
    model, _, original = signed
    reference = verify_model(model, bundles=bundles, policy=policy)
    i = data.draw(st.integers(0, len(original) - 1))
    flipped = bytearray(original)
    flipped[i] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("flip") / "model.sig"
    path.write_bytes(bytes(flipped))
    try:
        result = verify_model(model, signature=path, bundles=bundles, policy=policy)
    except SigningError:
        return
    assert (result.signer, result.digests, result.signed_at) == (reference.signer, reference.digests, reference.signed_at)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(dt.timezone.utc)))
def test_time_round_trip(when):
    assert parse_time(format_time(when), "t") == when.replace(microsecond=0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_time_parser_is_strict(text):
    try:
        when = parse_time(text, "t")
    except SigningError:
        return
    assert format_time(when) == text


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/../../b", "a//b", "./a", "a\\b", "a/", ""])
def test_unsafe_resource_names_are_refused(signed, name):
    doc = json.loads(signed[2])
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["name"] = name
    with pytest.raises(SigningError, match="unsafe path"):
        parse_statement(json.dumps(statement).encode())


def test_duplicate_members_are_refused(signed):
    text = signed[2].decode()
    dup = text.replace('{"mediaType":', '{"mediaType":"x","mediaType":', 1)
    assert dup != text
    with pytest.raises(SigningError, match="duplicate JSON member 'mediaType'"):
        parse_bundle(dup.encode())
