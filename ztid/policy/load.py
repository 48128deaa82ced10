"""Strict policy.yaml loading: YAML → validated PolicySpec → compiled Policy, every error located.

Errors read ``<file>:<line>: <path>: <what is wrong>``, e.g.
``policy.yaml:14: components.inference.allow.registry: unknown action 'wrtie'``. Unknown keys,
wrong types, duplicate keys (which ``yaml.safe_load`` would silently collapse), unknown actions or
targets, allow/deny conflicts, bad identity templates and bad trust domains all stop the load.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from typing import Any, Final, NoReturn

import yaml

from ztid.errors import IdentityError, PolicyError
from ztid.identity import IdentityTemplate
from ztid.policy.engine import Policy
from ztid.policy.model import ComponentSpec, Federation, PolicySpec, Rule
from ztid.spiffeid import TrustDomain

__all__ = ["DEFAULT_ACTIONS", "load_policy", "parse_policy", "parse_spec"]

DEFAULT_ACTIONS: Final = ("read", "write")
_TOP_KEYS: Final = ("version", "trust_domain", "federation", "actions", "identities", "tenancy", "mode", "components")
_REQUIRED: Final = ("version", "trust_domain", "identities", "components")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]+\Z")  # a component is a SPIFFE ID path segment
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_.-]*\Z")
_MAX_BYTES: Final = 1 << 20


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its line, each key's line, and any duplicate keys."""

    line: int
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]  # (key, line, first line)


class _Seq(list[Any]):
    """A YAML sequence that remembers its line and each item's line."""

    line: int
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers and report duplicate keys."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line, m.key_lines, m.duplicates = node.start_mark.line + 1, {}, []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise yaml.constructor.ConstructorError(None, None, "merge keys ('<<') are not allowed", key_node.start_mark)
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value", key_node.start_mark) from None
        line = key_node.start_mark.line + 1
        if key in m:
            m.duplicates.append((key, line, m.key_lines[key]))
            continue
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = line
    return m


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    s.line, s.item_lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return s


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _type_name(value: object) -> str:
    return {
        _Map: "a mapping", _Seq: "a list", str: "a string", bool: "a boolean", int: "an integer",
        float: "a number", type(None): "null",
    }.get(type(value), type(value).__name__)


class _Reader:
    """Walks the loaded document, raising located PolicyErrors."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, line: int, path: str, message: str, cause: BaseException | None = None) -> NoReturn:
        raise PolicyError(message, location=f"{self.name}:{line}: {path}" if path else f"{self.name}:{line}") from cause

    def mapping(self, value: Any, line: int, path: str, keys: tuple[str, ...] | None, what: str) -> _Map:
        """Check ``value`` is a mapping with no duplicate keys and (unless ``keys`` is None) no unknown keys."""
        if not isinstance(value, _Map):
            self.fail(line, path, f"{what} must be a mapping, not {_type_name(value)}")
        if keys is None:  # keys are names chosen by the author; the caller reports duplicates in its own words
            return value
        self.no_duplicates(value, path, "key")
        for key in sorted(value, key=lambda k: value.key_lines[k]):
            if key not in keys:
                self.fail(value.key_lines[key], _join(path, key), f"unknown key {key!r}; known keys: {', '.join(keys)}")
        return value

    def no_duplicates(self, value: _Map, path: str, what: str) -> None:
        for key, line, first in value.duplicates:
            self.fail(line, _join(path, key), f"duplicate {what} {key!r} (first at line {first})")

    def string(self, value: Any, line: int, path: str, what: str) -> str:
        if not isinstance(value, str):
            self.fail(line, path, f"{what} must be a string, not {_type_name(value)}")
        if not value:
            self.fail(line, path, f"{what} must not be empty")
        return value

    def seq(self, value: Any, line: int, path: str, what: str) -> _Seq:
        if not isinstance(value, _Seq):
            self.fail(line, path, f"{what} must be a list, not {_type_name(value)}")
        return value

    def names(self, value: Any, line: int, path: str, what: str, check: Callable[[str, int, str], None]) -> list[tuple[str, int]]:
        items = self.seq(value, line, path, f"{what} list")
        out: list[tuple[str, int]] = []
        seen: dict[str, int] = {}
        for i, (item, item_line) in enumerate(zip(items, items.item_lines)):
            where = f"{path}[{i}]"
            text = self.string(item, item_line, where, what)
            if text in seen:
                self.fail(item_line, where, f"duplicate {what} {text!r} (first at line {seen[text]})")
            check(text, item_line, where)
            seen[text] = item_line
            out.append((text, item_line))
        return out


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def parse_spec(text: str | bytes, *, name: str = "<string>", path: str | None = None) -> PolicySpec:
    """Validate policy text into a :class:`PolicySpec` (no compilation).

    Raises:
        PolicyError: located as ``<name>:<line>: <path>``.
    """
    r = _Reader(name)
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) > _MAX_BYTES:
        r.fail(1, "", f"policy file larger than {_MAX_BYTES} bytes")
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        r.fail(raw.count(b"\n", 0, exc.start) + 1, "", f"not UTF-8 text (byte {exc.start})", exc)
    try:
        doc = yaml.load(source, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "does not parse"
        r.fail((mark.line + 1) if mark else 1, "", f"invalid YAML: {problem}", exc)
    except yaml.YAMLError as exc:
        r.fail(1, "", f"invalid YAML: {exc}", exc)
    except RecursionError as exc:
        r.fail(1, "", "invalid YAML: nested too deeply", exc)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp scalar that is no date
        r.fail(1, "", f"invalid YAML value: {exc}", exc)
    if doc is None:
        r.fail(1, "", "the policy is empty; expected a mapping with version, trust_domain, identities, components")
    top = r.mapping(doc, 1, "", _TOP_KEYS, "the policy")
    for key in _REQUIRED:
        if key not in top:
            r.fail(top.line, key, "missing required key")
    line = top.key_lines.get

    version = top["version"]
    if type(version) is not int:
        r.fail(line("version"), "version", f"version must be an integer, not {_type_name(version)}")
    if version != 1:
        r.fail(line("version"), "version", f"unsupported version {version} (supported: 1)")

    trust_domain = _trust_domain(r, top["trust_domain"], line("trust_domain"), "trust_domain")
    federation = _federation(r, top.get("federation"), line("federation", top.line), trust_domain)
    trust_domains = {trust_domain, *(f.trust_domain for f in federation)}

    actions: tuple[str, ...] = DEFAULT_ACTIONS
    if "actions" in top:
        def check_action(a: str, ln: int, where: str) -> None:
            if _ACTION_RE.match(a) is None:
                r.fail(ln, where, f"invalid action name {a!r}: use lowercase letters, digits, '_', '-', '.'")
        actions = tuple(a for a, _ in r.names(top["actions"], line("actions"), "actions", "action", check_action))
        if not actions:
            r.fail(line("actions"), "actions", "the action list is empty")

    templates: list[IdentityTemplate] = []

    def check_template(text: str, ln: int, where: str) -> None:
        try:
            t = IdentityTemplate.parse(text)
        except IdentityError as exc:
            r.fail(ln, where, str(exc), exc)
        if t.trust_domain not in trust_domains:
            r.fail(ln, where, f"template trust domain {t.trust_domain.name!r} is neither the policy's trust domain "
                              f"{trust_domain.name!r} nor a federated one ({text!r})")
        templates.append(t)

    r.names(top["identities"], line("identities"), "identities", "identity template", check_template)
    if not templates:
        r.fail(line("identities"), "identities", "at least one identity template is needed")

    tenancy = _choice(r, top.get("tenancy", "isolated"), line("tenancy", 0), "tenancy", ("isolated", "shared"))
    mode = _choice(r, top.get("mode", "enforce"), line("mode", 0), "mode", ("enforce", "audit"))
    components = _components(r, top["components"], line("components"), frozenset(actions))
    return PolicySpec(
        name=name, digest=digest, version=1, trust_domain=trust_domain, federation=federation,
        actions=frozenset(actions), identities=tuple(templates), tenancy=tenancy,  # type: ignore[arg-type]
        mode=mode, components=components, path=path,  # type: ignore[arg-type]
    )


def _trust_domain(r: _Reader, value: Any, line: int, path: str) -> TrustDomain:
    text = r.string(value, line, path, "a trust domain")
    if "://" in text:
        r.fail(line, path, f"write the trust domain name without 'spiffe://' ({text!r})")
    try:
        return TrustDomain(text)
    except IdentityError as exc:
        r.fail(line, path, str(exc), exc)


def _choice(r: _Reader, value: Any, line: int, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        r.fail(line, path, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def _federation(r: _Reader, value: Any, line: int, own: TrustDomain) -> tuple[Federation, ...]:
    if value is None:
        return ()
    fed = r.mapping(value, line, "federation", None, "federation")
    r.no_duplicates(fed, "federation", "trust domain")
    out = []
    for key in fed:
        where, ln = _join("federation", key), fed.key_lines[key]
        td = _trust_domain(r, key, ln, where)
        if td == own:
            r.fail(ln, where, f"the policy's own trust domain {own.name!r} cannot also be federated")
        entry = fed[key]
        bundle = None
        if entry is not None:
            body = r.mapping(entry, ln, where, ("bundle",), "a federation entry")
            if "bundle" in body:
                bundle = r.string(body["bundle"], body.key_lines["bundle"], _join(where, "bundle"), "a bundle path")
        out.append(Federation(td, bundle, ln))
    return tuple(out)


def _components(r: _Reader, value: Any, line: int, actions: frozenset[str]) -> tuple[ComponentSpec, ...]:
    comps = r.mapping(value, line, "components", None, "components")
    r.no_duplicates(comps, "components", "component")
    for key in comps:
        if not isinstance(key, str) or _NAME_RE.match(key) is None or key in (".", ".."):
            r.fail(comps.key_lines[key], _join("components", key),
                   f"invalid component name {key!r}: a component is a SPIFFE ID path segment (A-Z a-z 0-9 . - _)")
    known = frozenset(comps)
    return tuple(_component(r, name, comps[name], comps.key_lines[name], known, actions) for name in comps)


def _component(r: _Reader, name: str, value: Any, line: int, known: frozenset[str], actions: frozenset[str]) -> ComponentSpec:
    path = f"components.{name}"
    if value is None:  # a component that only receives calls
        return ComponentSpec(name, line=line)
    body = r.mapping(value, line, path, ("allow", "deny"), "a component")
    allow: list[Rule] = []
    if "allow" in body and body["allow"] is not None:
        apath = f"{path}.allow"
        amap = r.mapping(body["allow"], body.key_lines["allow"], apath, None, "allow")
        r.no_duplicates(amap, apath, "target")
        for target in amap:
            tline, tpath = amap.key_lines[target], _join(apath, target)
            _check_target(r, target, tline, tpath, known)

            def check_action(a: str, ln: int, where: str, tpath: str = tpath) -> None:
                if a not in actions:
                    r.fail(ln, tpath, f"unknown action {a!r}; known actions: {', '.join(sorted(actions))}")

            acts = r.names(amap[target], tline, tpath, "action", check_action)
            if not acts:
                r.fail(tline, tpath, "empty action list; remove the entry to allow nothing")
            allow.append(Rule(name, target, "allow", frozenset(a for a, _ in acts), tpath, tline))
    deny: list[Rule] = []
    if "deny" in body and body["deny"] is not None:
        allowed = {rule.target: rule.line for rule in allow}

        def check_deny(target: str, ln: int, where: str) -> None:
            _check_target(r, target, ln, where, known)
            if target in allowed:
                r.fail(ln, where, f"{target!r} is both allowed (line {allowed[target]}) and denied; keep one")

        for target, ln in r.names(body["deny"], body.key_lines["deny"], f"{path}.deny", "target", check_deny):
            deny.append(Rule(name, target, "deny", frozenset(), f"{path}.deny.{target}", ln))
    return ComponentSpec(name, tuple(allow), tuple(deny), line)


def _check_target(r: _Reader, target: Any, line: int, path: str, known: frozenset[str]) -> None:
    if not isinstance(target, str):
        r.fail(line, path, f"a target must be a component name, not {_type_name(target)}")
    if target not in known:
        r.fail(line, path, f"unknown target component {target!r}; declare it under components")


def parse_policy(text: str | bytes, *, name: str = "<string>", path: str | None = None) -> Policy:
    """Validate and compile policy text.

    Args:
        text: the policy document (bytes are hashed as given; str is hashed as UTF-8).
        name: how errors name the source, e.g. ``"policy.yaml"``.
        path: the file it came from, if any (federation bundle paths resolve against its directory).

    Raises:
        PolicyError: located as ``<name>:<line>: <path>: <message>``.
    """
    return Policy(parse_spec(text, name=name, path=path))


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read, validate and compile the policy file at ``path``.

    Raises:
        PolicyError: the file is unreadable or invalid (located as ``<path>:<line>: ...``).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file: {exc.strerror or exc}", location=name) from exc
    return parse_policy(data, name=name, path=name)
