"""Selector files: strict parsing with located errors, and matching against peer credentials."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.agent.selectors import Entry, PeerCred, load_entries, match, parse_entries
from ztid.errors import ConfigError
from ztid.spiffeid import SpiffeId

GOOD = """\
entries:
  - spiffe_id: spiffe://dev.local/training
    selectors: {uid: 1000}
  - spiffe_id: spiffe://dev.local/inference
    selectors: {unix_user: root, exe: /usr/bin/python*}
    hint: inference
"""


def test_parses_entries_in_order() -> None:
    entries = parse_entries(GOOD)
    assert [str(e.spiffe_id) for e in entries] == ["spiffe://dev.local/training", "spiffe://dev.local/inference"]
    assert entries[0].selectors == (("uid", 1000),)
    assert entries[1].hint == "inference"


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("[]", "sel.yaml:1: entries", "exactly one key"),
        ("entries: {}", "sel.yaml:1: entries", "must be a list"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n", "sel.yaml:2: entries[0].selectors", "non-empty mapping"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {}\n", "sel.yaml:2: entries[0].selectors", "non-empty"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {uid: -1}\n", "sel.yaml:3: entries[0].selectors.uid", "non-negative"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {uid: '1000'}\n", "entries[0].selectors.uid", "integer"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {uuid: 1}\n", "entries[0].selectors.uuid", "unknown selector 'uuid'"),
        ("entries:\n  - spiffe_id: SPIFFE://dev.local/a\n    selectors: {uid: 1}\n", "entries[0].spiffe_id", "invalid"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {uid: 1}\n    color: red\n", "sel.yaml:2: entries[0]", "unknown key 'color'"),
        ("entries:\n  - {spiffe_id: spiffe://dev.local/a, selectors: {uid: 1}}\n  - {spiffe_id: spiffe://dev.local/a, selectors: {uid: 2}}\n",
         "entries[1].spiffe_id", "already used by entries[0]"),
        ("entries:\n  - spiffe_id: spiffe://dev.local/a\n    selectors: {uid: 1, uid: 2}\n", "sel.yaml:3", "duplicate key 'uid'"),
        ("entries: [\n", "sel.yaml:", "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_path(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_entries(text, name="sel.yaml")
    assert where in str(info.value)
    assert what in str(info.value)


def test_unreadable_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read selector file"):
        load_entries(tmp_path / "missing.yaml")


def test_every_selector_of_an_entry_must_match() -> None:
    entry = Entry(SpiffeId.parse("spiffe://dev.local/a"), (("uid", 5), ("exe", "/opt/app/*")))
    assert entry.matches(PeerCred(pid=1, uid=5, gid=5, exe="/opt/app/python"))
    assert not entry.matches(PeerCred(pid=1, uid=6, gid=5, exe="/opt/app/python"))
    assert not entry.matches(PeerCred(pid=1, uid=5, gid=5, exe="/usr/bin/python"))
    assert not entry.matches(PeerCred(pid=1, uid=5, gid=5, exe=None))  # exe unknown never matches a glob


def test_unix_user_resolves_the_callers_uid() -> None:
    entries = parse_entries("entries:\n  - spiffe_id: spiffe://dev.local/root\n    selectors: {unix_user: root}\n")
    assert match(entries, PeerCred(pid=1, uid=0, gid=0)) == entries
    assert match(entries, PeerCred(pid=1, uid=4242424, gid=0)) == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_entries_or_a_config_error(text: str) -> None:
    try:
        entries = parse_entries(text)
    except ConfigError:
        return
    assert all(isinstance(e, Entry) and e.selectors for e in entries)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=15))
def test_arbitrary_yaml_structures_are_entries_or_a_config_error(doc: object) -> None:
    import yaml

    try:
        parse_entries(yaml.safe_dump({"entries": doc}))
    except ConfigError:
        pass
