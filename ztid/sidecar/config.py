"""The sidecar's configuration file: strict YAML, validated once at start, errors located by line.

::

    listen: [unix:/run/ztid/authz.sock, 127.0.0.1:9191]   # unix:PATH or HOST:PORT ([::1]:PORT); default unix socket
    policy: /etc/ztid/policy.yaml
    trust:                                   # exactly one of: bundles (+ optional svid), workload_api
      bundles: [/etc/ztid/bundle.pem]
      trust_domain: null                     # for SPIFFE bundle JSON files, which carry no name
      svid: {cert: /etc/ztid/svid.pem, key: /etc/ztid/svid.key}
      # workload_api: unix:///run/spire/sockets/agent.sock
    decision_log: {path: /var/log/ztid/decisions.log, checkpoint_every: 1000, fsync: checkpoint}
    metrics: {listen: 127.0.0.1:9102}        # Prometheus text format on /metrics; omit for none
    reflection: false
    tls: {enabled: false, allowed_clients: []}   # mTLS with the sidecar's own SVID on TCP listeners
    reload_interval: 1.0                     # seconds between policy file checks
    drain_seconds: 5                         # SIGTERM: answer in-flight checks for up to this long
    workers: 1                               # >1: processes sharing TCP ports (SO_REUSEPORT); see workers.py
    extauthz: {trust_xfcc: false, proxy_id: null, require_certificate: false, routes: []}

Relative paths are relative to the config file's directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import yaml

from ztid.enforce.extauthz_config import ExtAuthzConfig
from ztid.errors import ConfigError, IdentityError
from ztid.spiffeid import SpiffeId

__all__ = ["DEFAULT_LISTEN", "SidecarConfig", "load_config", "parse_listen"]

DEFAULT_LISTEN: Final = "unix:/tmp/ztid-authz.sock"
_HOST_PORT_RE: Final = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\Z")
_TOP: Final = frozenset({"listen", "policy", "trust", "decision_log", "metrics", "reflection", "tls",
                         "reload_interval", "drain_seconds", "extauthz", "workers"})


def parse_listen(text: str) -> str:
    """Validate one listen address (``unix:PATH`` or ``HOST:PORT``) and return it as gRPC spells it.

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a listen address must be a string, not {type(text).__name__}")
    if text.startswith("unix:"):
        path = text[len("unix:"):].removeprefix("//")
        if not path:
            raise ConfigError(f"empty unix socket path in {text!r}")
        return "unix:" + path
    m = _HOST_PORT_RE.match(text)
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise ConfigError(f"listen address must be unix:PATH or HOST:PORT, not {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything the sidecar needs, validated. Build with :func:`load_config` or directly."""

    policy: str
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    bundles: tuple[str, ...] = ()
    trust_domain: str | None = None
    svid_cert: str | None = None
    svid_key: str | None = None
    workload_api: str | None = None
    decision_log: str | None = None
    checkpoint_every: int = 1000
    fsync: str = "checkpoint"
    metrics: str | None = None
    reflection: bool = False
    tls: bool = False
    allowed_clients: tuple[SpiffeId, ...] = ()
    reload_interval: float = 1.0
    drain_seconds: float = 5.0
    extauthz: ExtAuthzConfig = field(default_factory=ExtAuthzConfig)
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("listen: at least one address")
        object.__setattr__(self, "listen", tuple(parse_listen(a) for a in self.listen))
        if self.metrics is not None and parse_listen(self.metrics).startswith("unix:"):
            raise ConfigError("metrics.listen must be HOST:PORT")
        if self.workload_api and (self.bundles or self.svid_cert):
            raise ConfigError("trust: give either workload_api or bundles (+ svid), not both")
        if not self.workload_api and not self.bundles:
            raise ConfigError("trust: give bundles (files) or workload_api (a socket)")
        if (self.svid_cert is None) != (self.svid_key is None):
            raise ConfigError("trust.svid needs both cert and key")
        if self.tls and not (self.svid_cert or self.workload_api):
            raise ConfigError("tls.enabled needs the sidecar's own SVID (trust.svid or trust.workload_api)")
        if self.fsync not in ("always", "checkpoint", "never"):
            raise ConfigError(f"decision_log.fsync must be always, checkpoint or never, not {self.fsync!r}")
        for name in ("checkpoint_every",):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"decision_log.{name} must be a positive integer, not {value!r}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be an integer from 1 to 64, not {self.workers!r}")
        for name in ("reload_interval", "drain_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")

    @property
    def has_svid(self) -> bool:
        """Whether the sidecar has its own SVID (to sign log checkpoints, serve mTLS)."""
        return bool(self.svid_cert or self.workload_api)

    def with_overrides(self, **changes: Any) -> "SidecarConfig":
        """A copy with the given fields replaced (command-line flags override the file).

        Raises:
            ConfigError: the result is invalid.
        """
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _lines(text: str) -> dict[str, int]:
    """Map dotted key paths to their 1-based line in the YAML text (best effort)."""
    out: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                out[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                out[f"{path}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{path}[{i}]")

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except yaml.YAMLError:
        pass
    return out


class _Reader:
    def __init__(self, name: str, base: str, lines: dict[str, int]) -> None:
        self.name, self.base, self.lines = name, base, lines

    def fail(self, path: str, message: str) -> ConfigError:
        line = self.lines.get(path)
        where = f"{self.name}:{line}: {path}" if line else (f"{self.name}: {path}" if path else self.name)
        return ConfigError(message, location=where)

    def mapping(self, data: Any, path: str, keys: frozenset[str] | set[str]) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.fail(path, f"must be a mapping, not {type(data).__name__}")
        for key in data:
            if key not in keys:
                raise self.fail(f"{path}.{key}" if path else str(key), f"unknown key {key!r}")
        return data

    def path(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a file path, not {value!r}")
        return value if os.path.isabs(value) else os.path.join(self.base, value)

    def paths(self, value: Any, path: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise self.fail(path, "must be a path or a list of paths")
        return tuple(self.path(v, f"{path}[{i}]") for i, v in enumerate(items))


def load_config(path: str | os.PathLike[str]) -> SidecarConfig:
    """Read and validate a sidecar YAML file.

    Raises:
        ConfigError: unreadable, not YAML, unknown keys, bad values; located as ``file:line: key``.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read sidecar config: {exc}", location=name) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", location=name) from exc
    return parse_config(data, name=name, base=os.path.dirname(os.path.abspath(name)), lines=_lines(text))


def parse_config(data: Any, *, name: str = "<config>", base: str = ".", lines: dict[str, int] | None = None) -> SidecarConfig:
    """Validate an already-parsed mapping (see :func:`load_config`).

    Raises:
        ConfigError: located like :func:`load_config`.
    """
    r = _Reader(name, base, lines or {})
    top = r.mapping(data, "", _TOP)
    if "policy" not in top:
        raise r.fail("policy", "required: the policy file")
    trust = r.mapping(top.get("trust"), "trust", {"bundles", "trust_domain", "svid", "workload_api"})
    svid = r.mapping(trust.get("svid"), "trust.svid", {"cert", "key"})
    log = r.mapping(top.get("decision_log"), "decision_log", {"path", "checkpoint_every", "fsync"})
    metrics = r.mapping(top.get("metrics"), "metrics", {"listen"})
    tls = r.mapping(top.get("tls"), "tls", {"enabled", "allowed_clients"})
    listen = top.get("listen", [DEFAULT_LISTEN])
    listen = [listen] if isinstance(listen, str) else listen
    if not isinstance(listen, list):
        raise r.fail("listen", "must be an address or a list of addresses")
    for key, value in (("reflection", top.get("reflection", False)), ("tls.enabled", tls.get("enabled", False))):
        if not isinstance(value, bool):
            raise r.fail(key, f"must be true or false, not {value!r}")
    clients = tls.get("allowed_clients") or []
    try:
        if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
            raise r.fail("tls.allowed_clients", "must be a list of SPIFFE IDs")
        allowed = tuple(SpiffeId.parse(c) for c in clients)
    except IdentityError as exc:
        raise r.fail("tls.allowed_clients", str(exc)) from None
    fields: dict[str, Any] = {
        "policy": r.path(top["policy"], "policy"),
        "listen": tuple(listen),
        "bundles": r.paths(trust["bundles"], "trust.bundles") if trust.get("bundles") else (),
        "trust_domain": trust.get("trust_domain"),
        "svid_cert": r.path(svid["cert"], "trust.svid.cert") if "cert" in svid else None,
        "svid_key": r.path(svid["key"], "trust.svid.key") if "key" in svid else None,
        "workload_api": trust.get("workload_api"),
        "decision_log": r.path(log["path"], "decision_log.path") if log.get("path") else None,
        "checkpoint_every": log.get("checkpoint_every", 1000),
        "fsync": log.get("fsync", "checkpoint"),
        "metrics": metrics.get("listen"),
        "reflection": top.get("reflection", False),
        "tls": tls.get("enabled", False),
        "allowed_clients": allowed,
        "reload_interval": top.get("reload_interval", 1.0),
        "drain_seconds": top.get("drain_seconds", 5.0),
        "workers": top.get("workers", 1),
    }
    try:
        fields["extauthz"] = ExtAuthzConfig.from_mapping(top.get("extauthz"), location=f"{name}: extauthz")
        return SidecarConfig(**fields)
    except ConfigError as exc:
        if exc.location:
            raise
        key = exc.detail.split(" ", 1)[0].rstrip(":")
        raise r.fail(key if key in r.lines else "", exc.detail) from None
