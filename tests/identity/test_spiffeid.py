"""SPIFFE ID and trust domain parsing: every rule of ztid/spiffeid.py, tables, byte sweeps, properties."""

from __future__ import annotations

import pickle
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.errors import IdentityError
from ztid.spiffeid import SpiffeId, TrustDomain

VALID = [
    "spiffe://td",
    "spiffe://td/a/b",
    "spiffe://1.2.3.4/x",
    "spiffe://a_b.example/x",
    "spiffe://example..org/x",
    "spiffe://-example.org/x",
    "spiffe://td/Path.With-Mixed_Case09",
    "spiffe://td/.a",
    "spiffe://td/..a",
    "spiffe://td/...",
    "spiffe://" + "a" * 255 + "/x",
    "spiffe://td/" + "a" * (2048 - len("spiffe://td/")),  # exactly 2048 bytes
]

INVALID = [  # (input, rule)
    ("", "empty"),
    ("spiffe:/", "scheme"),
    ("spiffe:", "scheme"),
    ("td/x", "scheme"),
    ("http://td/x", "scheme"),
    ("spiffeid://td/x", "scheme"),
    ("SPIFFE://td/x", "scheme-case"),
    ("Spiffe://td/x", "scheme-case"),
    ("spiffe://", "trust-domain-empty"),
    ("spiffe:///x", "trust-domain-empty"),
    ("spiffe://u@td/x", "trust-domain-userinfo"),
    ("spiffe://u:p@td/x", "trust-domain-port"),
    ("spiffe://td:8080/x", "trust-domain-port"),
    ("spiffe://td:/x", "trust-domain-port"),
    ("spiffe://[::1]/x", "trust-domain-char"),
    ("spiffe://Example.org/x", "trust-domain-case"),
    ("spiffe://" + "a" * 256 + "/x", "trust-domain-length"),
    ("spiffe://td?x=1", "query"),
    ("spiffe://td/x?x=1", "query"),
    ("spiffe://td/x#f", "fragment"),
    ("spiffe://td#f", "fragment"),
    ("spiffe://%62%61%64/x", "percent-encoding"),
    ("spiffe://example%2eorg/x", "percent-encoding"),
    ("spiffe://td/%41", "percent-encoding"),
    ("spiffe://td/foo%2Fbar", "percent-encoding"),
    ("spiffe://td/%F0%9F%A4%AF", "percent-encoding"),
    ("spiffe://td/", "path-trailing-slash"),
    ("spiffe://td/a/", "path-trailing-slash"),
    ("spiffe://td//", "path-empty-segment"),
    ("spiffe://td//a", "path-empty-segment"),
    ("spiffe://td/a//b", "path-empty-segment"),
    ("spiffe://td/.", "path-dot-segment"),
    ("spiffe://td/..", "path-dot-segment"),
    ("spiffe://td/./a", "path-dot-segment"),
    ("spiffe://td/a/../b", "path-dot-segment"),
    ("spiffe://td/a/.", "path-dot-segment"),
    ("spiffe://td/a b", "control-or-space"),
    (" spiffe://td/a", "control-or-space"),
    ("spiffe://td/a\n", "control-or-space"),
    ("spiffe://td/a\x00", "control-or-space"),
    ("spiffe://td/a;b", "path-char"),
    ("spiffe://td/a:b", "path-char"),
    ("spiffe://td/a@b", "path-char"),
    ("spiffe://td/é", "path-char"),
    ("spiffe://tëd/x", "trust-domain-char"),
    ("spiffe://td/" + "a" * (2049 - len("spiffe://td/")), "length"),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_ids_parse_and_round_trip(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid
    assert str(sid.trust_domain) == text[len("spiffe://") :].split("/", 1)[0]


@pytest.mark.parametrize(("text", "rule"), INVALID)
def test_invalid_ids_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(IdentityError) as info:
        SpiffeId.parse(text)
    assert info.value.rule == rule
    assert info.value.value == text
    assert repr(text[:50])[:-1] in str(info.value) or len(text) > 300  # the message quotes the input


def test_parts() -> None:
    sid = SpiffeId.parse("spiffe://ai-platform.example/ns/team-a/sa/training")
    assert sid.trust_domain == TrustDomain("ai-platform.example")
    assert sid.path == "/ns/team-a/sa/training"
    assert sid.segments == ("ns", "team-a", "sa", "training")
    assert sid.is_member_of(TrustDomain("ai-platform.example"))
    assert not sid.is_member_of(TrustDomain("other.example"))
    td_id = TrustDomain("td").id()
    assert str(td_id) == "spiffe://td" and td_id.path == "" and td_id.segments == ()


def test_from_segments() -> None:
    assert str(SpiffeId.from_segments("td", "a", "b")) == "spiffe://td/a/b"
    assert str(SpiffeId.from_segments(TrustDomain("td"))) == "spiffe://td"
    for bad, rule in [("a/b", "path-char"), ("$", "path-char"), (".", "path-dot-segment"), ("..", "path-dot-segment")]:
        with pytest.raises(IdentityError) as info:
            SpiffeId.from_segments("td", bad)
        assert info.value.rule == rule
    with pytest.raises(IdentityError):
        SpiffeId.from_segments("td", "")
    with pytest.raises(IdentityError) as info:
        SpiffeId.from_segments("td", 3)  # type: ignore[arg-type]
    assert info.value.rule == "type"


def test_constructor_needs_leading_slash() -> None:
    # A path without '/' must not glue onto the trust domain (spiffe://td + a -> spiffe://tda).
    with pytest.raises(IdentityError) as info:
        SpiffeId(TrustDomain("td"), "a")
    assert info.value.rule == "path-leading-slash"
    assert SpiffeId(TrustDomain("td"), "/a") == SpiffeId.parse("spiffe://td/a")
    with pytest.raises(IdentityError):
        SpiffeId(TrustDomain("td"), "/a//b")
    with pytest.raises(IdentityError):
        SpiffeId("td", "/a")  # type: ignore[arg-type]


def test_trust_domain_parse() -> None:
    assert TrustDomain.parse("td") == TrustDomain("td")
    assert TrustDomain.parse("spiffe://td/a/b") == TrustDomain("td")
    for bad, rule in [("", "trust-domain-empty"), ("TD", "trust-domain-case"), ("td:1", "trust-domain-port"), ("u@td", "trust-domain-userinfo"), ("t%64", "percent-encoding")]:
        with pytest.raises(IdentityError) as info:
            TrustDomain.parse(bad)
        assert info.value.rule == rule
    for bad_type in (None, 5, b"td"):
        with pytest.raises(IdentityError) as info:
            TrustDomain.parse(bad_type)  # type: ignore[arg-type]
        assert info.value.rule == "type"
        with pytest.raises(IdentityError):
            TrustDomain(bad_type)  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        TrustDomain.parse("spiffe://TD/x")
    assert TrustDomain("a" * 255).name == "a" * 255


@pytest.mark.parametrize("value", [None, 5, b"spiffe://td/x", ["spiffe://td/x"]])
def test_non_string_input_is_an_identity_error(value: object) -> None:
    with pytest.raises(IdentityError) as info:
        SpiffeId.parse(value)  # type: ignore[arg-type]
    assert info.value.rule == "type"


_TD_OK = set(string.ascii_lowercase + string.digits + ".-_")
_PATH_OK = set(string.ascii_letters + string.digits + ".-_")


@pytest.mark.parametrize("byte", [b for b in range(256) if b != 0x2F])  # '/' ends the trust domain
def test_byte_sweep_trust_domain(byte: int) -> None:
    ch = chr(byte)
    text = f"spiffe://a{ch}b/x"
    if ch in _TD_OK:
        assert SpiffeId.parse(text).trust_domain.name == f"a{ch}b"
        assert TrustDomain(f"a{ch}b").name == f"a{ch}b"
    else:
        with pytest.raises(IdentityError):
            SpiffeId.parse(text)
        with pytest.raises(IdentityError):
            TrustDomain(f"a{ch}b")


@pytest.mark.parametrize("byte", range(256))
def test_byte_sweep_path(byte: int) -> None:
    ch = chr(byte)
    text = f"spiffe://td/a{ch}b"
    if ch in _PATH_OK:
        assert SpiffeId.parse(text).segments == (f"a{ch}b",)
    elif ch == "/":
        assert SpiffeId.parse(text).segments == ("a", "b")
    else:
        with pytest.raises(IdentityError):
            SpiffeId.parse(text)
        with pytest.raises(IdentityError):
            SpiffeId.from_segments("td", f"a{ch}b")


def test_utf8_bytes_as_latin1_characters_are_rejected() -> None:
    for raw in ("é".encode(), "🤯".encode()):
        text = "spiffe://td/" + raw.decode("latin-1")
        with pytest.raises(IdentityError):
            SpiffeId.parse(text)


def test_never_equal_to_str() -> None:
    sid = SpiffeId.parse("spiffe://td/a")
    assert sid != "spiffe://td/a"
    assert "spiffe://td/a" != sid
    assert TrustDomain("td") != "td"
    assert sid not in {"spiffe://td/a"}
    assert TrustDomain("td") != sid.trust_domain.id()  # a TrustDomain is not its ID either


def test_eq_hash_order() -> None:
    a1, a2 = SpiffeId.parse("spiffe://td/a"), SpiffeId.parse("spiffe://td/a")
    assert a1 == a2 and hash(a1) == hash(a2) and len({a1, a2}) == 1
    assert SpiffeId.parse("spiffe://td/Path") != SpiffeId.parse("spiffe://td/path")  # path is case-sensitive
    assert sorted([SpiffeId.parse("spiffe://td/b"), a1]) == [a1, SpiffeId.parse("spiffe://td/b")]
    assert TrustDomain("a") < TrustDomain("b")
    assert hash(TrustDomain("td")) == hash(TrustDomain("td"))


def test_immutable() -> None:
    sid = SpiffeId.parse("spiffe://td/a")
    with pytest.raises(AttributeError):
        sid._path = "/b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        TrustDomain("td")._name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling(protocol: int) -> None:
    sid = SpiffeId.parse("spiffe://td/a/b")
    td = TrustDomain("td")
    assert pickle.loads(pickle.dumps(sid, protocol)) == sid
    assert pickle.loads(pickle.dumps(td, protocol)) == td
    assert pickle.loads(pickle.dumps(sid, protocol)).segments == ("a", "b")


_td_strategy = st.text(alphabet=sorted(_TD_OK), min_size=1, max_size=40)
_seg_strategy = st.text(alphabet=sorted(_PATH_OK), min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(_td_strategy, st.lists(_seg_strategy, max_size=6))
def test_property_valid_ids_round_trip(td: str, segments: list[str]) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert sid.segments == tuple(segments)
    assert SpiffeId.from_segments(td, *segments) == sid
    assert pickle.loads(pickle.dumps(sid)) == sid


_FORBIDDEN = [chr(c) for c in range(256) if chr(c) not in _PATH_OK and chr(c) != "/"] + ["é", "🤯", "\u2028"]


@settings(max_examples=300, deadline=None)
@given(_td_strategy, st.lists(_seg_strategy, min_size=1, max_size=4), st.sampled_from(_FORBIDDEN), st.data())
def test_property_forbidden_byte_is_rejected(td: str, segments: list[str], bad: str, data: st.DataObject) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    pos = data.draw(st.integers(min_value=len("spiffe://"), max_value=len(text)))
    broken = text[:pos] + bad + text[pos:]
    with pytest.raises(IdentityError):
        SpiffeId.parse(broken)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_property_arbitrary_text_never_raises_untyped(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except IdentityError:
        return
    assert str(sid) == text
