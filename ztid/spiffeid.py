"""SPIFFE IDs and trust domains, parsed strictly per the SPIFFE-ID standard (§2).

A :class:`SpiffeId` is ``spiffe://<trust domain><path>``:

* the scheme is exactly ``spiffe`` (lowercase; ``SPIFFE://`` is rejected, not normalised);
* the trust domain is 1–255 characters of ``[a-z0-9._-]`` (no uppercase, no port, no userinfo);
* the path is empty or a sequence of ``/segment`` with segments of ``[A-Za-z0-9._-]``,
  none empty, ``.`` or ``..``, and no trailing slash;
* no query, no fragment, no percent-encoding, no whitespace or control characters anywhere;
* at most 2048 bytes in all.

Both types are frozen, hashable, and never equal to a ``str``: compare ``SpiffeId`` to
``SpiffeId`` (parse at the edge, pass types inside).
"""

from __future__ import annotations

import re
from typing import Final

from ztid.errors import IdentityError

__all__ = ["SpiffeId", "TrustDomain"]

SCHEME_PREFIX: Final = "spiffe://"
MAX_ID_LENGTH: Final = 2048
MAX_TRUST_DOMAIN_LENGTH: Final = 255

_TD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_TD_RE: Final = re.compile(r"[a-z0-9._-]{1,255}\Z")
# The happy path: one regex match; anything else falls through to _diagnose for an exact message.
_ID_RE: Final = re.compile(r"spiffe://([a-z0-9._-]{1,255})((?:/[A-Za-z0-9._-]+)*)\Z")


def _has_dot_segment(path: str) -> bool:
    # The regex admits '.' and '..' as segments; they are rare, so test only when a '/.' occurs.
    return "/." in path and any(seg in (".", "..") for seg in path.split("/"))


def _quote(value: object) -> str:
    return repr(value) if not isinstance(value, str) else repr(value[:300] + ("…" if len(value) > 300 else ""))


def _fail(kind: str, rule: str, why: str, value: object) -> IdentityError:
    return IdentityError(f"invalid {kind}: {why} ({_quote(value)})", value=value, rule=rule)


def _check_trust_domain_name(name: str, value: str, kind: str) -> None:
    if not name:
        raise _fail(kind, "trust-domain-empty", "trust domain is empty", value)
    if len(name) > MAX_TRUST_DOMAIN_LENGTH:
        raise _fail(kind, "trust-domain-length", f"trust domain longer than {MAX_TRUST_DOMAIN_LENGTH} characters", value)
    for ch in name:
        if ch in _TD_CHARS:
            continue
        if ch == ":":
            raise _fail(kind, "trust-domain-port", "trust domain must not contain a port", value)
        if ch == "@":
            raise _fail(kind, "trust-domain-userinfo", "trust domain must not contain userinfo", value)
        if ch == "%":
            raise _fail(kind, "percent-encoding", "percent-encoding is not allowed", value)
        if "A" <= ch <= "Z":
            raise _fail(kind, "trust-domain-case", "trust domain must be lowercase", value)
        raise _fail(kind, "trust-domain-char", f"trust domain contains forbidden character {ch!r}; allowed are a-z 0-9 . - _", value)


def _diagnose(value: str) -> IdentityError:
    """Name the first rule ``value`` breaks (only called once the fast path failed)."""
    kind = "SPIFFE ID"
    if not value:
        return _fail(kind, "empty", "SPIFFE ID is empty", value)
    for ch in value:
        if ord(ch) < 0x21 or ord(ch) == 0x7F or ch.isspace():
            return _fail(kind, "control-or-space", f"contains whitespace or control character {ch!r}", value)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        return _fail(kind, "length", f"longer than {MAX_ID_LENGTH} bytes", value)
    scheme, sep, rest = value.partition("://")
    if not sep:
        return _fail(kind, "scheme", "missing 'spiffe://' scheme", value)
    if scheme != "spiffe":
        if scheme.lower() == "spiffe":
            return _fail(kind, "scheme-case", "scheme must be lowercase 'spiffe'", value)
        return _fail(kind, "scheme", f"scheme must be 'spiffe', not {scheme!r}", value)
    if "#" in rest:
        return _fail(kind, "fragment", "fragment is not allowed", value)
    if "?" in rest:
        return _fail(kind, "query", "query is not allowed", value)
    if "%" in rest:
        return _fail(kind, "percent-encoding", "percent-encoding is not allowed", value)
    td, slash, path = rest.partition("/")
    try:
        _check_trust_domain_name(td, value, kind)
    except IdentityError as exc:
        return exc
    if not slash:
        return _fail(kind, "unknown", "does not parse", value)  # pragma: no cover - regex would have matched
    path = "/" + path
    if path == "/":
        return _fail(kind, "path-trailing-slash", "path must not end with '/' (use no path for the trust domain ID)", value)
    segments = path[1:].split("/")
    for i, seg in enumerate(segments):
        if seg == "":
            if i == len(segments) - 1:
                return _fail(kind, "path-trailing-slash", "path must not end with '/'", value)
            return _fail(kind, "path-empty-segment", "path contains an empty segment ('//')", value)
        if seg in (".", ".."):
            return _fail(kind, "path-dot-segment", f"path contains a {seg!r} segment", value)
        for ch in seg:
            if ch not in _PATH_CHARS:
                return _fail(kind, "path-char", f"path contains forbidden character {ch!r}; allowed are A-Z a-z 0-9 . - _", value)
    return _fail(kind, "unknown", "does not parse", value)  # pragma: no cover


class TrustDomain:
    """A SPIFFE trust domain name, e.g. ``ai-platform.example``.

    Construct with :meth:`parse`, which also accepts a SPIFFE ID and takes its trust domain.
    """

    __slots__ = ("_name",)
    _name: str

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise IdentityError(f"invalid trust domain: expected a string ({_quote(name)})", value=name, rule="type")
        if _TD_RE.match(name) is None:
            _check_trust_domain_name(name, name, "trust domain")
            raise _fail("trust domain", "unknown", "does not parse", name)  # pragma: no cover
        object.__setattr__(self, "_name", name)

    @classmethod
    def parse(cls, text: str) -> "TrustDomain":
        """Parse a trust domain name, or the trust domain of a ``spiffe://`` ID.

        Raises:
            IdentityError: the name (or ID) is malformed.
        """
        if not isinstance(text, str):
            raise IdentityError(f"invalid trust domain: expected a string ({_quote(text)})", value=text, rule="type")
        if "://" in text:
            return SpiffeId.parse(text).trust_domain
        return cls(text)

    @property
    def name(self) -> str:
        """The trust domain name, without scheme."""
        return self._name

    def id(self) -> "SpiffeId":
        """The trust domain's own SPIFFE ID, ``spiffe://<name>`` (empty path)."""
        return SpiffeId(self, "")

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("TrustDomain is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrustDomain):
            return self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("TrustDomain", self._name))

    def __lt__(self, other: "TrustDomain") -> bool:
        if not isinstance(other, TrustDomain):
            return NotImplemented
        return self._name < other._name

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"TrustDomain({self._name!r})"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (TrustDomain, (self._name,))


class SpiffeId:
    """A parsed SPIFFE ID. Immutable, hashable, ordered, and never equal to a ``str``."""

    __slots__ = ("_td", "_path", "_str")
    _td: TrustDomain
    _path: str
    _str: str

    def __init__(self, trust_domain: TrustDomain, path: str = "") -> None:
        if not isinstance(trust_domain, TrustDomain):
            raise IdentityError(f"invalid SPIFFE ID: trust_domain must be a TrustDomain ({_quote(trust_domain)})", value=trust_domain, rule="type")
        if not isinstance(path, str):
            raise IdentityError(f"invalid SPIFFE ID: path must be a string ({_quote(path)})", value=path, rule="type")
        if path and not path.startswith("/"):
            # Without this, TrustDomain("td") + "a" would silently become the ID spiffe://tda.
            raise _fail("SPIFFE ID", "path-leading-slash", "path must be empty or start with '/'", path)
        text = SCHEME_PREFIX + trust_domain.name + path
        if path and (_ID_RE.match(text) is None or _has_dot_segment(path)):
            raise _diagnose(text)
        if len(text) > MAX_ID_LENGTH:
            raise _diagnose(text)
        object.__setattr__(self, "_td", trust_domain)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_str", text)

    @classmethod
    def parse(cls, text: str) -> "SpiffeId":
        """Parse ``text`` strictly; nothing is stripped or normalised.

        Raises:
            IdentityError: naming the broken rule and quoting the input.
        """
        if not isinstance(text, str):
            raise IdentityError(f"invalid SPIFFE ID: expected a string ({_quote(text)})", value=text, rule="type")
        m = _ID_RE.match(text)
        if m is None or len(text) > MAX_ID_LENGTH or _has_dot_segment(m.group(2)):
            raise _diagnose(text)
        self = object.__new__(cls)
        object.__setattr__(self, "_td", TrustDomain(m.group(1)))
        object.__setattr__(self, "_path", m.group(2))
        object.__setattr__(self, "_str", text)
        return self

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain | str, *segments: str) -> "SpiffeId":
        """Build ``spiffe://<trust_domain>/<seg>/<seg>…``, validating each segment.

        Raises:
            IdentityError: a segment or the trust domain is malformed.
        """
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        for seg in segments:
            # Each argument is exactly one segment: a '/' inside one would smuggle in extra segments.
            if not isinstance(seg, str):
                raise IdentityError(f"invalid SPIFFE ID: path segment must be a string ({_quote(seg)})", value=seg, rule="type")
            if "/" in seg:
                raise _fail("SPIFFE ID", "path-char", "path segment contains '/'", seg)
        return cls.parse(SCHEME_PREFIX + td.name + "".join("/" + s for s in segments))

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain this ID belongs to."""
        return self._td

    @property
    def path(self) -> str:
        """The path, ``""`` for a trust domain ID, otherwise starting with ``/``."""
        return self._path

    @property
    def segments(self) -> tuple[str, ...]:
        """The path segments, ``()`` for a trust domain ID."""
        return tuple(self._path[1:].split("/")) if self._path else ()

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """Whether this ID belongs to ``trust_domain``."""
        return self._td == trust_domain

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("SpiffeId is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpiffeId):
            return self._str == other._str
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("SpiffeId", self._str))

    def __lt__(self, other: "SpiffeId") -> bool:
        if not isinstance(other, SpiffeId):
            return NotImplemented
        return self._str < other._str

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"SpiffeId({self._str!r})"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (SpiffeId.parse, (self._str,))
