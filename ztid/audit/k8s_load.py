"""Read Kubernetes objects from manifest files, ``kubectl get -o json`` dumps, or a live cluster.

Accepted input: multi-document YAML, JSON, and ``List``/``*List`` objects (what ``kubectl get -o json``
prints), from files, directories (``*.yaml``, ``*.yml``, ``*.json``, recursively) or ``-`` (stdin).
Every object keeps where it came from (path and 1-based line) for the reports. Anything that is not
a Kubernetes object is an :class:`~ztid.errors.AuditError` naming the file and line; never a crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ztid import _strictjson
from ztid.audit.findings import Location
from ztid.errors import AuditError

__all__ = ["LIVE_KINDS", "Manifest", "load_live", "load_paths", "parse_manifests"]

MAX_INPUT_BYTES = 64 << 20
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster, keeps node marks


class _YamlLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate mapping keys.

    PyYAML keeps the last of two equal keys silently; other readers may not, so
    ``{privileged: true, privileged: false}`` could audit clean and run privileged.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (readers disagree on which value wins)",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_EXPANDED_NODES = 5_000_000  # per document, counting every alias use at full size


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded (memoised: linear in distinct nodes)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if children_done or not kids:
            sizes[id(node)] = 1 + sum(sizes.get(id(k), 0) for k in kids)
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


_SUFFIXES = (".yaml", ".yml", ".json")

# Resource types read by --live: core kinds in one call, then optional ones one by one (a CRD the
# cluster lacks, or a kind the auditor may not list, becomes a note). Only legacy token Secrets are
# listed, and their data is dropped on arrival.
LIVE_KINDS = ("namespaces", "pods", "deployments", "statefulsets", "daemonsets", "replicasets",
              "replicationcontrollers", "jobs", "cronjobs", "services", "serviceaccounts", "networkpolicies")
LIVE_OPTIONAL_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("secrets", ("--field-selector", "type=kubernetes.io/service-account-token")),
    ("configmaps", ()),
    ("peerauthentications.security.istio.io", ()),
    ("authorizationpolicies.security.istio.io", ()),
    ("pytorchjobs.kubeflow.org", ()),
    ("mpijobs.kubeflow.org", ()),
)


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object as a plain mapping, and where it was read from."""

    obj: Mapping[str, Any]
    location: Location

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def name(self) -> str:
        name = self.metadata.get("name")
        return str(name) if name else f"{self.metadata.get('generateName', '')}*"

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line else source


def _check_object(obj: object, source: str, line: int | None) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise AuditError(f"{_where(source, line)}: not a Kubernetes object (a {type(obj).__name__}, expected a mapping)")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise AuditError(f"{_where(source, line)}: Kubernetes object without a 'kind'")
    meta = obj.get("metadata")
    if kind.endswith("List") and "items" in obj:
        return obj
    if not isinstance(meta, Mapping) or not any(isinstance(meta.get(k), str) and meta.get(k)
                                                for k in ("name", "generateName")):
        raise AuditError(f"{_where(source, line)}: {kind} without metadata.name (or generateName)")
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        raise AuditError(f"{_where(source, line)}: {kind} {meta.get('name')!r}: metadata.namespace is not a string")
    return obj


def _expand(obj: Mapping[str, Any], source: str, line: int | None,
            item_lines: Sequence[int | None] = ()) -> list[Manifest]:
    obj = _check_object(obj, source, line)
    kind = str(obj["kind"])
    if kind.endswith("List") and "items" in obj:
        items = obj.get("items")
        if items is None:
            return []
        if not isinstance(items, list):
            raise AuditError(f"{_where(source, line)}: {kind}.items is not a list")
        out: list[Manifest] = []
        for i, item in enumerate(items):
            item_line = item_lines[i] if i < len(item_lines) else line
            out.extend(_expand(item, source, item_line))
        return out
    return [Manifest(obj, Location(source, line))]


def _items_lines(node: yaml.Node) -> list[int | None]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "items" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def parse_manifests(data: bytes | str, *, source: str = "<string>") -> list[Manifest]:
    """Parse one file's text (YAML documents or JSON) into Kubernetes objects.

    Raises:
        AuditError: malformed YAML/JSON, or a document that is not a Kubernetes object.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise AuditError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    else:
        text = data
    if len(text) > MAX_INPUT_BYTES:
        raise AuditError(f"{source}: larger than {MAX_INPUT_BYTES >> 20} MiB")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            doc = _strictjson.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            where = f"{source}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else source
            raise AuditError(f"{where}: malformed JSON: {exc}") from exc
        docs = doc if isinstance(doc, list) else [doc]
        return [m for d in docs for m in _expand(d, source, 1)]
    out: list[Manifest] = []
    may_alias = "&" in text  # an alias needs an anchor, and an anchor is written with '&'
    try:
        loader = _YamlLoader(text)
    except yaml.YAMLError as exc:  # the reader rejects control characters up front
        raise AuditError(f"{source}: malformed YAML: {exc}") from exc
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1
            if may_alias and _expanded_size(node) > MAX_EXPANDED_NODES:
                raise AuditError(f"{source}:{line}: YAML aliases expand to more than {MAX_EXPANDED_NODES} nodes")
            obj = loader.construct_document(node)
            if obj is None:  # an empty document (a lone '---')
                continue
            out.extend(_expand(obj, source, line, _items_lines(node)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise AuditError(f"{where}: malformed YAML: {problem}") from exc
    except RecursionError as exc:
        raise AuditError(f"{source}: YAML nested too deeply") from exc
    finally:
        loader.dispose()
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    return [path]


def load_paths(paths: Iterable[str | os.PathLike[str]], *, stdin: Callable[[], bytes] | None = None) -> list[Manifest]:
    """Read every manifest under ``paths`` (files, directories, ``-`` for stdin).

    Raises:
        AuditError: a path cannot be read, or a file is not Kubernetes YAML/JSON.
    """
    out: list[Manifest] = []
    for raw in paths:
        if str(raw) == "-":
            data = (stdin or sys.stdin.buffer.read)()
            out.extend(parse_manifests(data, source="<stdin>"))
            continue
        root = Path(raw)
        if not root.exists():
            raise AuditError(f"cannot read {str(raw)!r}: no such file or directory")
        for file in _files(root):
            try:
                if file.stat().st_size > MAX_INPUT_BYTES:
                    raise AuditError(f"{file}: larger than {MAX_INPUT_BYTES >> 20} MiB")
                data = file.read_bytes()
            except OSError as exc:
                raise AuditError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from exc
            out.extend(parse_manifests(data, source=str(file)))
    return out


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[bytes]"]


def _run(argv: Sequence[str]) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(list(argv), capture_output=True, timeout=120, check=False)


def _strip_secret_data(manifests: list[Manifest]) -> list[Manifest]:
    # The audit needs a Secret's type and annotations, never its data: drop it at the edge.
    out = []
    for m in manifests:
        if m.kind == "Secret":
            obj = {k: v for k, v in m.obj.items() if k not in ("data", "stringData")}
            meta = dict(m.metadata)
            annotations = meta.get("annotations")
            if isinstance(annotations, Mapping):  # last-applied-configuration repeats the data
                meta["annotations"] = {k: v for k, v in annotations.items()
                                       if k != "kubectl.kubernetes.io/last-applied-configuration"}
            obj["metadata"] = meta
            m = Manifest(obj, m.location)
        out.append(m)
    return out


def load_live(*, kubectl: str = "kubectl", context: str | None = None, namespace: str | None = None,
              runner: Runner | None = None) -> tuple[list[Manifest], list[str]]:
    """Read the cluster through ``kubectl get ... -o json``; return objects and notes on what was skipped.

    Secrets are read for their type only; their data is dropped as soon as it is parsed.

    Raises:
        AuditError: kubectl is missing, fails on the core kinds, or prints something that is not JSON.
    """
    run = runner or _run
    exe = kubectl if os.sep in kubectl else shutil.which(kubectl)
    if exe is None:
        raise AuditError(f"--live needs kubectl, and {kubectl!r} is not on PATH")
    base = [exe] + (["--context", context] if context else [])
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    notes: list[str] = []

    def get(kinds: str, *, optional: bool, extra: Sequence[str] = ()) -> list[Manifest]:
        argv = [*base, "get", kinds, *scope, *extra, "-o", "json"]
        try:
            proc = run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            raise AuditError(f"cannot run {exe!r}: {exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            detail = err[-1] if err else f"exit status {proc.returncode}"
            if optional:
                notes.append(f"skipped {kinds}: {detail}")
                return []
            raise AuditError(f"kubectl get {kinds} failed: {detail}")
        return parse_manifests(proc.stdout, source=f"kubectl get {kinds}")

    manifests = get(",".join(LIVE_KINDS), optional=False)
    for kind, extra in LIVE_OPTIONAL_KINDS:
        manifests.extend(get(kind, optional=True, extra=extra))
    return _strip_secret_data(manifests), notes
