"""The key service's dataset registry: which policy target (and tenant) holds each dataset.

Authorization of a key release needs the dataset's *target* (``data-store``) and tenant. They are
the service's own record, never the caller's word: a request names only the dataset, and the
service looks the target up here. A dataset is registered by the operator (``ztid keyd
--dataset NAME=TARGET[@TENANT]``) or by the first allowed ``NewKey`` for it; its target never
changes afterwards (an operator edits the file to move it).

File format (JSON, written atomically)::

    {"format": "ztid-keyd-datasets/v1",
     "datasets": {"imagenet": {"target": "data-store", "tenant": null, "key_id": "default"}}}
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ztid._atomic import write_atomic
from ztid.errors import ConfigError, UsageError

__all__ = ["DatasetRecord", "DatasetRegistry", "check_dataset", "parse_dataset_spec"]

FORMAT = "ztid-keyd-datasets/v1"
_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,126}")


def check_dataset(value: Any) -> str:
    """Return ``value`` if it is a valid dataset id.

    Raises:
        UsageError: not 1-255 characters of ``[A-Za-z0-9._-]`` (or ``.``/``..``).
    """
    if not isinstance(value, str) or not _ID.fullmatch(value) or value in (".", ".."):
        raise UsageError(f"dataset id must be 1-255 characters of [A-Za-z0-9._-], got {value!r}")
    return value


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise UsageError(f"{what} must be a policy name ([a-z0-9][a-z0-9._-]*), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """Where a dataset lives in the policy: its target component, tenant and KEK id."""

    dataset: str
    target: str
    tenant: str | None = None
    key_id: str = "default"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "tenant": self.tenant, "key_id": self.key_id}


def parse_dataset_spec(text: str, *, key_id: str = "default") -> DatasetRecord:
    """Parse ``NAME=TARGET`` or ``NAME=TARGET@TENANT`` (the ``--dataset`` option).

    Raises:
        UsageError: the spec or one of its names is malformed.
    """
    name, sep, rest = text.partition("=")
    if not sep:
        raise UsageError(f"dataset spec must be NAME=TARGET[@TENANT], got {text!r}")
    target, _, tenant = rest.partition("@")
    return DatasetRecord(check_dataset(name), _check_name(target, "target"),
                         _check_name(tenant, "tenant") if tenant else None, key_id)


class DatasetRegistry:
    """Dataset → :class:`DatasetRecord`, in memory or persisted to ``path``.

    Args:
        path: the JSON file to load and keep up to date; ``None`` keeps the registry in memory.
        records: datasets to register at start (the operator's ``--dataset`` options); they must
            agree with the file.

    Raises:
        ConfigError: the file is malformed or disagrees with ``records``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, records: tuple[DatasetRecord, ...] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._records: dict[str, DatasetRecord] = {}
        if self.path is not None and self.path.exists():
            self._records = _load(self.path)
        changed = False
        for rec in records:
            known = self._records.get(rec.dataset)
            if known is not None and known != rec:
                raise ConfigError(f"dataset {rec.dataset!r} is registered as {known.to_json()} in {os.fspath(self.path)!r}, "
                                  f"not {rec.to_json()}; edit the registry to move it")
            changed |= known is None
            self._records[rec.dataset] = rec
        if changed:
            self._save()

    def get(self, dataset: str) -> DatasetRecord | None:
        return self._records.get(dataset)

    def __len__(self) -> int:
        return len(self._records)

    def register(self, record: DatasetRecord) -> DatasetRecord:
        """Register ``record`` unless its dataset is known; return the record in force."""
        with self._lock:
            known = self._records.get(record.dataset)
            if known is not None:
                return known
            self._records[record.dataset] = record
            self._save()
            return record

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"format": FORMAT, "datasets": {k: r.to_json() for k, r in sorted(self._records.items())}}
        try:
            write_atomic(self.path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise ConfigError(f"cannot write dataset registry {os.fspath(self.path)!r}: {exc.strerror or exc}") from exc


def _load(path: Path) -> dict[str, DatasetRecord]:
    where = os.fspath(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read dataset registry {where!r}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"dataset registry {where!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("datasets"), dict):
        raise ConfigError(f"dataset registry {where!r}: must be {{'format': {FORMAT!r}, 'datasets': {{...}}}}")
    out: dict[str, DatasetRecord] = {}
    for name, entry in doc["datasets"].items():
        try:
            if not isinstance(entry, dict) or set(entry) != {"target", "tenant", "key_id"}:
                raise UsageError("must have exactly 'target', 'tenant' and 'key_id'")
            tenant = entry["tenant"]
            out[name] = DatasetRecord(check_dataset(name), _check_name(entry["target"], "target"),
                                      None if tenant is None else _check_name(tenant, "tenant"),
                                      check_dataset(entry["key_id"]))
        except UsageError as exc:
            raise ConfigError(f"dataset registry {where!r}: datasets.{name}: {exc}") from exc
    return out
