"""Envoy's ``x-forwarded-client-cert`` (XFCC) header: a strict parser and a formatter.

Grammar (Envoy ``headers.rst``, HCM ``forward_client_cert_details``)::

    header  = element *( "," element )          ; one element per proxy hop, appended at the end
    element = pair *( ";" pair )
    pair    = key "=" value                     ; keys case-insensitive, values case-sensitive
    value   = quoted / bare                     ; may be empty (Envoy writes ``URI=`` for "none")
    quoted  = DQUOTE *( qchar / "\\" CHAR ) DQUOTE   ; ``\\"`` is a quote, ``\\\\`` a backslash
    bare    = *( any char except "," ";" DQUOTE )  ; optional spaces/tabs around are ignored

Keys: ``By`` (repeatable), ``Hash`` (SHA-256 hex of the client certificate's DER), ``Cert`` and
``Chain`` (URL-encoded PEM), ``Subject``, ``URI`` and ``DNS`` (repeatable). Anything else (an
unknown key, a repeated single-valued key, an unterminated quote, a bad percent-escape, a ``Hash``
that is not 64 hex digits, an empty element, a header past the size caps) raises
:class:`ztid.VerificationError` whose message starts with ``malformed XFCC:``.

Parsing only reads the header; deciding whether to *trust* it (last element only, ``By`` equal to
the expected proxy, certificates re-verified) is the job of :mod:`ztid.enforce.extauthz`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ztid.errors import VerificationError

__all__ = [
    "MAX_ELEMENTS",
    "MAX_HEADER_LENGTH",
    "MAX_PAIRS",
    "XfccElement",
    "format_xfcc",
    "parse_xfcc",
]

MAX_HEADER_LENGTH: Final = 64 * 1024  # Envoy's default max request headers size is 60 KiB in all
MAX_ELEMENTS: Final = 32
MAX_PAIRS: Final = 64

_KEYS: Final = {"by": "by", "hash": "hash", "cert": "cert", "chain": "chain", "subject": "subject", "uri": "uri", "dns": "dns"}
_REPEATABLE: Final = frozenset({"by", "uri", "dns"})
_HASH_RE: Final = re.compile(r"[0-9a-fA-F]{64}\Z")
_BAD_PERCENT_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_OWS: Final = " \t"
_NEEDS_QUOTES: Final = frozenset(',;="\\')


def _fail(why: str, header: str) -> VerificationError:
    shown = header if len(header) <= 200 else header[:200] + "…"
    return VerificationError(f"malformed XFCC: {why} ({shown!r})")


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One XFCC element (one proxy hop), values decoded.

    Attributes:
        by: the ``By`` values (URI SANs of the proxy that appended this element).
        hash: the ``Hash`` value in lowercase hex, or None.
        cert: the client certificate as PEM text (URL-decoded), or None.
        chain: the client chain as PEM text (URL-decoded, leaf first), or None.
        subject: the ``Subject`` value, or None.
        uri: the client's URI SANs, in order.
        dns: the client's DNS SANs, in order.
    """

    by: tuple[str, ...] = ()
    hash: str | None = None
    cert: str | None = None
    chain: str | None = None
    subject: str | None = None
    uri: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


def parse_xfcc(
    header: str,
    *,
    max_length: int = MAX_HEADER_LENGTH,
    max_elements: int = MAX_ELEMENTS,
    max_pairs: int = MAX_PAIRS,
) -> tuple[XfccElement, ...]:
    """Parse an XFCC header value into its elements, first (oldest hop) to last.

    Args:
        header: the header value exactly as received (all values joined with ``,`` if the header
            appeared more than once).
        max_length: refuse longer headers (characters).
        max_elements: refuse more elements than this.
        max_pairs: refuse an element with more key=value pairs than this.

    Returns:
        The elements, in header order; never empty.

    Raises:
        VerificationError: the header breaks the grammar or a cap (message starts ``malformed XFCC:``).
    """
    if not isinstance(header, str):
        raise VerificationError(f"malformed XFCC: header must be str, not {type(header).__name__}")
    if len(header) > max_length:
        raise _fail(f"header longer than {max_length} characters", header)
    if not header.strip(_OWS):
        raise _fail("empty header", header)
    elements: list[XfccElement] = []
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(header)
    while True:
        # --- key
        while i < n and header[i] in _OWS:
            i += 1
        start = i
        while i < n and header[i] not in '=,;"':
            i += 1
        key = header[start:i].strip(_OWS)
        if i >= n or header[i] != "=":
            if not key and (i >= n or header[i] == ","):
                raise _fail("empty element", header)
            raise _fail(f"expected '=' after key {key!r}", header)
        if not key:
            raise _fail("empty key", header)
        i += 1
        # --- value
        while i < n and header[i] in _OWS:
            i += 1
        if i < n and header[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise _fail("unterminated quoted value", header)
                ch = header[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n and header[i + 1] in '"\\':
                    buf.append(header[i + 1])
                    i += 2
                    continue
                buf.append(ch)
                i += 1
            value = "".join(buf)
            while i < n and header[i] in _OWS:
                i += 1
            if i < n and header[i] not in ",;":
                raise _fail(f"unexpected {header[i]!r} after the quoted value of {key!r}", header)
        else:
            start = i
            while i < n and header[i] not in ',;"':
                i += 1
            if i < n and header[i] == '"':
                raise _fail(f"stray '\"' in the unquoted value of {key!r}", header)
            value = header[start:i].strip(_OWS)
        pairs.append((key, value))
        if len(pairs) > max_pairs:
            raise _fail(f"more than {max_pairs} pairs in one element", header)
        # --- separator
        if i >= n or header[i] == ",":
            elements.append(_element(pairs, header))
            pairs = []
            if len(elements) > max_elements:
                raise _fail(f"more than {max_elements} elements", header)
            if i >= n:
                return tuple(elements)
        i += 1  # past ',' or ';'
        if i >= n:
            raise _fail("trailing separator", header)


def _element(pairs: Sequence[tuple[str, str]], header: str) -> XfccElement:
    fields: dict[str, list[str]] = {}
    for raw_key, value in pairs:
        key = _KEYS.get(raw_key.lower())
        if key is None:
            raise _fail(f"unknown key {raw_key!r}", header)
        if key in fields and key not in _REPEATABLE:
            raise _fail(f"key {raw_key!r} repeated in one element", header)
        fields.setdefault(key, []).append(value)

    def one(key: str) -> str | None:
        values = fields.get(key)
        return values[0] if values else None

    digest = one("hash")
    if digest is not None:
        if not _HASH_RE.match(digest):
            raise _fail("Hash is not 64 hex digits", header)
        digest = digest.lower()
    return XfccElement(
        by=tuple(v for v in fields.get("by", ()) if v),
        hash=digest,
        cert=_pem(one("cert"), "Cert", header),
        chain=_pem(one("chain"), "Chain", header),
        subject=one("subject"),
        uri=tuple(v for v in fields.get("uri", ()) if v),
        dns=tuple(v for v in fields.get("dns", ()) if v),
    )


def _pem(value: str | None, key: str, header: str) -> str | None:
    if value is None or value == "":
        return None
    if _BAD_PERCENT_RE.search(value):
        raise _fail(f"bad percent-escape in {key}", header)
    try:
        text = urllib.parse.unquote(value, encoding="ascii", errors="strict")
    except UnicodeDecodeError as exc:
        raise _fail(f"{key} does not decode to ASCII PEM", header) from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _fail(f"{key} is not a URL-encoded PEM certificate", header)
    return text


def _quote(value: str) -> str:
    if value == "" or value != value.strip(_OWS) or any(ch in _NEEDS_QUOTES for ch in value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def format_xfcc(elements: Iterable[XfccElement]) -> str:
    """Write elements as an XFCC header value the way Envoy does (Cert/Chain URL-encoded and quoted).

    Args:
        elements: the elements, first (oldest hop) to last.

    Returns:
        The header value; :func:`parse_xfcc` reads it back to equal elements.
    """
    out: list[str] = []
    for el in elements:
        parts = [f"By={_quote(v)}" for v in el.by]
        if el.hash is not None:
            parts.append(f"Hash={el.hash}")
        if el.cert is not None:
            parts.append(f'Cert="{urllib.parse.quote(el.cert, safe="")}"')
        if el.chain is not None:
            parts.append(f'Chain="{urllib.parse.quote(el.chain, safe="")}"')
        if el.subject is not None:
            parts.append(f"Subject={_quote(el.subject)}" if el.subject else 'Subject=""')
        parts += [f"URI={_quote(v)}" for v in el.uri]
        parts += [f"DNS={_quote(v)}" for v in el.dns]
        out.append(";".join(parts))
    return ",".join(out)
