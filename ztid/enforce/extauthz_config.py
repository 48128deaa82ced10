"""The ext_authz mapping's configuration: XFCC trust, the proxy identity, the routes map; compiled once.

::

    ExtAuthzConfig(
        trust_xfcc=True, proxy_id="spiffe://ai-platform.example/ns/edge/sa/gateway",
        routes=[Route("GET", "/v1/models", "registry", "read"), {"prefix": "/v1/upload", "target": "registry"}],
    )

Routes are consulted only when the route's ``context_extensions`` and the destination principal name
no target; the longest matching path prefix wins (a method-specific route before a ``*`` one at equal
length); prefixes match whole segments (``/v1/models`` matches ``/v1/models/x``, not ``/v1/modelsx``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ztid.errors import ConfigError, IdentityError
from ztid.spiffeid import SpiffeId

__all__ = ["ExtAuthzConfig", "Route", "default_action", "normal_path"]

_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_METHOD_RE: Final = re.compile(r"(\*|[A-Z]+)\Z")
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
_ENCODED_SEPARATOR_RE: Final = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
_ROUTE_KEYS: Final = frozenset({"method", "prefix", "target", "action"})


def default_action(method: str) -> str:
    """``read`` for GET, HEAD and OPTIONS; ``write`` for every other method (unknown ones included)."""
    return "read" if method.upper() in _READ_METHODS else "write"


def normal_path(path: str) -> str | None:
    """The request path without query/fragment, or None when it is not in normal form.

    Not normal (and so never matched against a prefix): not starting with ``/``, ``//``, ``.``/``..``
    segments, a backslash, or a percent-encoded dot, slash, backslash or NUL.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or "//" in path or "\\" in path or _ENCODED_SEPARATOR_RE.search(path):
        return None
    if any(seg in (".", "..") for seg in path.split("/")):
        return None
    return path


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the routes map: method + path prefix → target component (and action).

    Attributes:
        method: an upper-case HTTP method, or ``*`` for any.
        prefix: a path prefix starting with ``/``, matched on whole segments.
        target: the target component.
        action: the action, or None for the method's default (:func:`default_action`).
    """

    method: str
    prefix: str
    target: str
    action: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _METHOD_RE.match(self.method):
            raise ConfigError(f"route method must be an upper-case HTTP method or '*', not {self.method!r}")
        if not isinstance(self.prefix, str) or normal_path(self.prefix) != self.prefix:
            raise ConfigError(f"route prefix must be a normal absolute path without query, not {self.prefix!r}")
        if not isinstance(self.target, str) or not _NAME_RE.match(self.target):
            raise ConfigError(f"route target must be a component name, not {self.target!r}")
        if self.action is not None and (not isinstance(self.action, str) or not _NAME_RE.match(self.action)):
            raise ConfigError(f"route action must be an action name, not {self.action!r}")

    def matches(self, method: str, path: str) -> bool:
        """Whether this route covers ``method`` and the normal ``path``."""
        if self.method != "*" and self.method != method:
            return False
        prefix = self.prefix.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")

    @classmethod
    def from_mapping(cls, data: Any, *, location: str = "routes") -> "Route":
        """A route from ``{method?, prefix, target, action?}``.

        Raises:
            ConfigError: unknown keys, missing keys, bad values (located).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a route must be a mapping, not {type(data).__name__}", location=location)
        unknown = set(data) - _ROUTE_KEYS
        if unknown:
            raise ConfigError(f"unknown route key(s): {', '.join(sorted(map(str, unknown)))}", location=location)
        for key in ("prefix", "target"):
            if key not in data:
                raise ConfigError(f"route needs {key!r}", location=location)
        try:
            return cls(str(data.get("method", "*")), data["prefix"], data["target"], data.get("action"))
        except ConfigError as exc:
            raise ConfigError(str(exc), location=location) from None


@dataclass(frozen=True, slots=True)
class ExtAuthzConfig:
    """How :class:`ztid.enforce.extauthz.ExtAuthz` maps requests. Frozen; validated and compiled once.

    Attributes:
        trust_xfcc: read the peer from XFCC (its last element, from ``proxy_id`` only); default off.
        proxy_id: the SPIFFE ID of the proxy whose XFCC element is trusted (required with trust_xfcc).
        routes: :class:`Route` values or mappings, for requests with no target otherwise.
        require_certificate: deny when Envoy sent no ``source.certificate`` (``include_peer_certificate``).

    Raises:
        ConfigError: trust_xfcc without a proxy_id, a malformed proxy_id, a bad route.
    """

    trust_xfcc: bool = False
    proxy_id: SpiffeId | str | None = None
    routes: Iterable[Route | Mapping[str, Any]] = ()
    require_certificate: bool = False
    proxy_spiffe_id: SpiffeId | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.trust_xfcc, bool) or not isinstance(self.require_certificate, bool):
            raise ConfigError("trust_xfcc and require_certificate must be booleans")
        proxy: SpiffeId | None = None
        if self.proxy_id is not None:
            try:
                proxy = self.proxy_id if isinstance(self.proxy_id, SpiffeId) else SpiffeId.parse(self.proxy_id)
            except IdentityError as exc:
                raise ConfigError(f"proxy_id: {exc}") from None
        if self.trust_xfcc and proxy is None:
            raise ConfigError("trust_xfcc needs proxy_id: the SPIFFE ID of the proxy whose XFCC element is trusted")
        routes = tuple(
            r if isinstance(r, Route) else Route.from_mapping(r, location=f"routes[{i}]") for i, r in enumerate(self.routes)
        )
        # Longest prefix first; a method-specific route before '*' at equal length.
        routes = tuple(sorted(routes, key=lambda r: (-len(r.prefix.rstrip("/")), r.method == "*")))
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "proxy_spiffe_id", proxy)

    def match(self, method: str, path: str) -> Route | None:
        """The route for ``method`` and the normal ``path``, or None."""
        method = method.upper()
        for route in self.routes:  # type: ignore[union-attr]
            if route.matches(method, path):
                return route
        return None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, location: str = "extauthz") -> "ExtAuthzConfig":
        """Build from a YAML mapping ``{trust_xfcc, proxy_id, routes, require_certificate}``.

        Raises:
            ConfigError: unknown keys or bad values (located).
        """
        data = dict(data or {})
        allowed = {"trust_xfcc", "proxy_id", "routes", "require_certificate"}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}", location=location)
        routes = data.get("routes") or ()
        if not isinstance(routes, list | tuple):
            raise ConfigError("routes must be a list", location=f"{location}.routes")
        try:
            return cls(
                trust_xfcc=data.get("trust_xfcc", False), proxy_id=data.get("proxy_id"),
                routes=[Route.from_mapping(r, location=f"{location}.routes[{i}]") for i, r in enumerate(routes)],
                require_certificate=data.get("require_certificate", False),
            )
        except ConfigError as exc:
            if exc.location:
                raise
            raise ConfigError(exc.detail, location=location) from None
