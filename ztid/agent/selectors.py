"""Which SVID a local caller gets: registration entries matched against the caller's unix credentials.

A selector file (YAML) lists entries; an entry gives its SPIFFE ID to every caller that matches
**all** of its selectors (as SPIRE's registration entries do)::

    entries:
      - spiffe_id: spiffe://dev.local/training
        selectors: {uid: 1000}
      - spiffe_id: spiffe://dev.local/inference
        selectors: {unix_user: svc-infer, exe: /opt/venv/bin/python*}
        hint: inference            # optional label passed to the client
        dns_names: [registry.ml]   # optional DNS SANs (gRPC clients check one on servers)

Selectors: ``uid``, ``gid``, ``pid`` (integers), ``unix_user`` (name of the caller's uid),
``exe`` (an :func:`fnmatch.fnmatchcase` glob on the caller's executable, from ``/proc/PID/exe``).
A caller matching several entries gets every one of them, in file order (the first is its default
identity). Unknown keys, wrong types, an entry without selectors and a duplicate SPIFFE ID are
:class:`~ztid.errors.ConfigError` naming the file, line and path.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ztid.errors import ConfigError, IdentityError
from ztid.spiffeid import SpiffeId

__all__ = ["Entry", "PeerCred", "load_entries", "match", "parse_entries"]

_INT_SELECTORS = ("uid", "gid", "pid")
_STR_SELECTORS = ("unix_user", "exe")
_ENTRY_KEYS = ("spiffe_id", "selectors", "hint", "dns_names")
# A DNS SAN as gRPC clients match it: letters, digits, '-' and '.', at most 253 characters.
_DNS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def check_dns_names(names: object, where: str) -> tuple[str, ...]:
    """Validate a list of DNS names for SVIDs.

    Raises:
        ConfigError: not a list of plausible DNS names.
    """
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError("must be a list of DNS names", location=where)
    for n in names:
        if not n or len(n) > 253 or not set(n) <= _DNS_CHARS or n.startswith((".", "-")) or ".." in n:
            raise ConfigError(f"{n!r} is not a DNS name", location=where)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class PeerCred:
    """A local caller as the kernel reports it (SO_PEERCRED at connect time).

    Attributes:
        pid, uid, gid: the caller's process, user and group ids.
        exe: the caller's executable (``/proc/PID/exe``), read when it connected; None if unreadable.
    """

    pid: int
    uid: int
    gid: int
    exe: str | None = None

    @property
    def unix_user(self) -> str | None:
        """The name of ``uid`` on this host, or None."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return None

    @classmethod
    def of_pid(cls, pid: int, uid: int, gid: int) -> "PeerCred":
        """Build from SO_PEERCRED values, reading the executable while the process is alive."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        return cls(pid, uid, gid, exe)


@dataclass(frozen=True, slots=True)
class Entry:
    """One registration entry: this SPIFFE ID for callers matching every selector."""

    spiffe_id: SpiffeId
    selectors: tuple[tuple[str, int | str], ...] = field(default=())
    hint: str = ""
    dns_names: tuple[str, ...] = ()

    def matches(self, peer: PeerCred) -> bool:
        """True when ``peer`` satisfies every selector (an entry without selectors matches everyone)."""
        for key, want in self.selectors:
            if key in _INT_SELECTORS:
                if getattr(peer, key) != want:
                    return False
            elif key == "unix_user":
                if peer.unix_user != want:
                    return False
            elif key == "exe":
                if peer.exe is None or not fnmatch.fnmatchcase(peer.exe, str(want)):
                    return False
            else:  # pragma: no cover - parse_entries admits no other key
                return False
        return True


def match(entries: Iterable[Entry], peer: PeerCred) -> tuple[Entry, ...]:
    """Every entry ``peer`` matches, in order (empty: the caller has no identity)."""
    return tuple(e for e in entries if e.matches(peer))


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps each mapping's and sequence's line and rejects duplicate keys."""


class _Lined:
    line: int


class _Map(dict, _Lined):  # type: ignore[type-arg]
    pass


class _Seq(list, _Lined):  # type: ignore[type-arg]
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    out = _Map()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse_entries(text: str | bytes, *, name: str = "<selectors>") -> tuple[Entry, ...]:
    """Parse a selector file's text into entries.

    Raises:
        ConfigError: malformed YAML or an invalid entry; located as ``name:line: path``.
    """
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", location=where) from exc

    def fail(node: Any, path: str, message: str) -> ConfigError:
        line = getattr(node, "line", None)
        return ConfigError(message, location=f"{name}:{line}: {path}" if line else f"{name}: {path}")

    if not isinstance(doc, _Map) or set(doc) != {"entries"}:
        raise fail(doc, "entries", "the file must be a mapping with exactly one key, 'entries'")
    items = doc["entries"]
    if not isinstance(items, _Seq):
        raise fail(doc, "entries", "must be a list of entries")
    entries: list[Entry] = []
    seen: dict[SpiffeId, int] = {}
    for i, item in enumerate(items):
        path = f"entries[{i}]"
        if not isinstance(item, _Map):
            raise fail(items, path, "an entry must be a mapping with spiffe_id and selectors")
        unknown = sorted(str(k) for k in item if k not in _ENTRY_KEYS)
        if unknown:
            raise fail(item, path, f"unknown key {unknown[0]!r} (allowed: {', '.join(_ENTRY_KEYS)})")
        if not isinstance(item.get("spiffe_id"), str):
            raise fail(item, f"{path}.spiffe_id", "is required and must be a string")
        try:
            sid = SpiffeId.parse(item["spiffe_id"])
        except IdentityError as exc:
            raise fail(item, f"{path}.spiffe_id", str(exc)) from exc
        if sid in seen:
            raise fail(item, f"{path}.spiffe_id", f"{str(sid)!r} already used by entries[{seen[sid]}]")
        seen[sid] = i
        hint = item.get("hint", "")
        if not isinstance(hint, str) or len(hint.encode()) > 1024:
            raise fail(item, f"{path}.hint", "must be a string of at most 1024 bytes")
        sels = item.get("selectors")
        if not isinstance(sels, _Map) or not sels:
            raise fail(item, f"{path}.selectors", "is required: a non-empty mapping (use --id to serve every caller)")
        parsed: list[tuple[str, int | str]] = []
        for key, value in sels.items():
            spath = f"{path}.selectors.{key}"
            if key in _INT_SELECTORS:
                if type(value) is not int or value < 0:
                    raise fail(sels, spath, f"must be a non-negative integer, got {value!r}")
            elif key in _STR_SELECTORS:
                if not isinstance(value, str) or not value:
                    raise fail(sels, spath, f"must be a non-empty string, got {value!r}")
            else:
                allowed = ", ".join(_INT_SELECTORS + _STR_SELECTORS)
                raise fail(sels, spath, f"unknown selector {key!r} (allowed: {allowed})")
            parsed.append((key, value))
        try:
            dns = check_dns_names(item.get("dns_names", []), f"{path}.dns_names")
        except ConfigError as exc:
            raise fail(item, f"{path}.dns_names", exc.detail) from exc
        entries.append(Entry(sid, tuple(parsed), hint, dns))
    return tuple(entries)


def load_entries(path: str | os.PathLike[str]) -> tuple[Entry, ...]:
    """Read and parse a selector file.

    Raises:
        ConfigError: the file is unreadable or invalid.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read selector file: {exc.strerror or exc}", location=os.fspath(path)) from exc
    return parse_entries(data, name=os.path.basename(os.fspath(path)))
