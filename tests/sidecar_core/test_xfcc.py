"""The XFCC parser: Envoy's grammar, strict failures, and hypothesis round trips / fuzzing."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.enforce.xfcc import XfccElement, format_xfcc, parse_xfcc
from ztid.errors import VerificationError

HASH = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ENVOY_DOC_EXAMPLE = (
    f'By=http://frontend.lyft.com;Hash={HASH};Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";'
    "URI=http://testclient.lyft.com"
)


def test_envoy_documentation_example() -> None:
    (el,) = parse_xfcc(ENVOY_DOC_EXAMPLE)
    assert el == XfccElement(
        by=("http://frontend.lyft.com",), hash=HASH, subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client",
        uri=("http://testclient.lyft.com",),
    )


def test_two_elements_in_order() -> None:
    els = parse_xfcc(f"By=spiffe://td/edge;URI=spiffe://td/a,By=spiffe://td/mesh;Hash={HASH};URI=spiffe://td/b")
    assert [e.by for e in els] == [("spiffe://td/edge",), ("spiffe://td/mesh",)]
    assert els[-1].uri == ("spiffe://td/b",)


def test_repeated_keys_and_mixed_case() -> None:
    (el,) = parse_xfcc("by=spiffe://td/p1;BY=spiffe://td/p2;uri=spiffe://td/a;Uri=spiffe://td/b;dns=a.example;DNS=b.example")
    assert el.by == ("spiffe://td/p1", "spiffe://td/p2")
    assert el.uri == ("spiffe://td/a", "spiffe://td/b")
    assert el.dns == ("a.example", "b.example")


def test_quoted_values_with_separators_and_escaped_quotes() -> None:
    (el,) = parse_xfcc(r'Subject="CN=a,O=b;c=\"quoted\"";URI="spiffe://td/x"')
    assert el.subject == 'CN=a,O=b;c="quoted"'
    assert el.uri == ("spiffe://td/x",)


def test_backslash_not_before_a_quote_is_kept() -> None:
    (el,) = parse_xfcc(r'Subject="CN=a\,b"')
    assert el.subject == r"CN=a\,b"


def test_url_encoded_cert_and_chain_are_decoded() -> None:
    enc = urllib.parse.quote(PEM, safe="")
    (el,) = parse_xfcc(f'Hash={HASH};Cert="{enc}";Chain="{enc}{enc}"')
    assert el.cert == PEM and el.chain == PEM + PEM


def test_envoy_empty_uri_means_none() -> None:
    (el,) = parse_xfcc(f"By=spiffe://td/p;Hash={HASH};Subject=\"\";URI=")
    assert el.uri == () and el.subject == ""


def test_hash_is_lowercased() -> None:
    assert parse_xfcc(f"Hash={HASH.upper()}")[0].hash == HASH


@pytest.mark.parametrize(
    "header, why",
    [
        ("", "empty header"),
        ("   ", "empty header"),
        ("By", "expected '='"),
        ("=x", "empty key"),
        ("By=a;", "trailing separator"),
        ("By=a,", "trailing separator"),
        ("By=a,,By=b", "empty element"),
        (",By=a", "empty element"),
        ('By="a', "unterminated"),
        ('Subject="a\\"', "unterminated"),
        ('By="a"b', "unexpected"),
        ('By=a"b"', "stray"),
        ("Foo=1", "unknown key"),
        (f"Hash={HASH};Hash={HASH}", "repeated"),
        ("Subject=a;subject=b", "repeated"),
        ("Cert=x;Cert=y", "repeated"),
        ("Hash=12", "64 hex"),
        ("Hash=" + "g" * 64, "64 hex"),
        ("Cert=%zz", "percent-escape"),
        ("Cert=%ff%fe", "ASCII"),
        ("Cert=hello", "not a URL-encoded PEM"),
        ("Chain=%2D%2D", "not a URL-encoded PEM"),
    ],
)
def test_malformed_headers_raise_a_typed_error(header: str, why: str) -> None:
    with pytest.raises(VerificationError, match="malformed XFCC") as info:
        parse_xfcc(header)
    assert why in str(info.value)


def test_size_caps() -> None:
    with pytest.raises(VerificationError, match="longer than"):
        parse_xfcc("By=" + "a" * 70_000)
    with pytest.raises(VerificationError, match="elements"):
        parse_xfcc(",".join(["By=a"] * 40))
    with pytest.raises(VerificationError, match="pairs"):
        parse_xfcc(";".join(["DNS=a"] * 70))
    assert len(parse_xfcc(",".join(["By=a"] * 3), max_elements=3)) == 3


def test_non_string_input() -> None:
    with pytest.raises(VerificationError):
        parse_xfcc(b"By=a")  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
_pem = st.builds(
    lambda body: f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n",
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), max_size=80),
)
_elements = st.builds(
    XfccElement,
    by=st.lists(_text, max_size=3).map(tuple),
    hash=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    cert=st.none() | _pem,
    chain=st.none() | _pem,
    subject=st.none() | st.text(max_size=30).filter(lambda s: "\x00" not in s),
    uri=st.lists(_text, max_size=3).map(tuple),
    dns=st.lists(_text, max_size=3).map(tuple),
).filter(lambda e: any((e.by, e.hash, e.cert, e.chain, e.subject is not None, e.uri, e.dns)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_elements, min_size=1, max_size=4))
def test_round_trip(elements: list[XfccElement]) -> None:
    assert parse_xfcc(format_xfcc(elements)) == tuple(elements)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_the_typed_error(header: str) -> None:
    try:
        elements = parse_xfcc(header)
    except VerificationError as exc:
        assert str(exc).startswith("malformed XFCC:")
    else:
        assert elements and all(isinstance(e, XfccElement) for e in elements)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('By=URIHashCert;,"\\ %2D-aspiffe:/')), max_size=80))
def test_grammar_shaped_noise_only_raises_the_typed_error(header: str) -> None:
    try:
        parse_xfcc(header)
    except VerificationError:
        pass
