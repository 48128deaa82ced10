"""The pipeline run audit: are a run's output artifacts hashed, signed, intact, and free of credentials?

A run directory holds ``metadata.json`` and/or ``artifact_info.json`` files (at any depth) with an
``output_artifacts`` list (or a name → entry mapping). An entry is a path string or an object::

    {"path": "model/weights.safetensors",          # or "uri", "file", "location", "name"
     "sha256": "9f86d0...",                        # or "hash"/"digest"/"checksum": "sha256:9f86d0..."
     "signature": "model.sig"}                     # or "signature_path", "sig"

Paths resolve against the metadata file's directory and must stay inside the run directory. An
entry without a signature key still counts as signed when ``<artifact>.sig`` or
``<artifact>.sigstore.json`` sits beside it.
Signature *verification* is a hook: pass ``verify_signature`` (see :class:`SignatureCheck`);
without one a present signature is reported as not verified (info), never as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ztid.audit import artifacts_rules as A
from ztid.audit.artifacts_rules import ARTIFACT_RULES
from ztid.audit.findings import Finding, Location, Report, Resource, Rule
from ztid.errors import AuditError, SigningError

__all__ = ["ARTIFACT_RULES", "METADATA_NAMES", "SignatureCheck", "SignatureVerdict", "audit_artifacts"]

METADATA_NAMES = ("metadata.json", "artifact_info.json")
MAX_METADATA_BYTES = 16 << 20
_PATH_KEYS = ("path", "uri", "file", "location", "name")
_HASH_KEYS = ("sha256", "sha384", "sha512", "hash", "digest", "checksum")
_SIG_KEYS = ("signature", "signature_path", "sig")
_SIG_SUFFIXES = (".sig", ".sigstore.json")  # a detached signature beside the artifact counts as recorded
_STRONG = {"sha256": 64, "sha384": 96, "sha512": 128}
_BY_LENGTH = {v: k for k, v in _STRONG.items()}
_CRED_NAMES = frozenset({".env", "credentials.json", "credentials", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
                         ".netrc", ".pgpass", ".pypirc", ".git-credentials", "kubeconfig",
                         "application_default_credentials.json", "token", ".token", "secrets.json", "secrets.yaml"})
_CRED_SUFFIXES = (".p12", ".pfx", ".jks", ".keystore", ".token")
_KEY_SUFFIXES = (".pem", ".key")


@dataclass(frozen=True)
class SignatureVerdict:
    """What a signature hook concluded about one artifact."""

    valid: bool
    detail: str
    signer: str | None = None


class SignatureCheck(Protocol):
    """Verify the signature recorded for ``artifact`` (an absolute path; ``entry`` is its metadata object).

    ``signature`` is the signature file as an absolute :class:`~pathlib.Path` when the recorded value
    names a file inside the run (relative to the metadata file), else the recorded string as is (an
    inline signature, a URI). Return a verdict; a ``SigningError`` raised instead is taken as a
    refusal. Any other exception propagates (a broken verifier is not a finding)."""

    def __call__(self, artifact: Path, signature: Path | str, *, entry: Mapping[str, Any],
                 run_dir: Path) -> SignatureVerdict:
        ...


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _finding(rule: Rule, kind: str, name: str, message: str, location: Location | None, subject: str = "") -> Finding:
    return Finding(rule, Resource(kind, None, name), message, subject, location)


def _load_metadata(path: Path, root: Path) -> Mapping[str, Any]:
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise AuditError(f"{_rel(path, root)}: larger than {MAX_METADATA_BYTES >> 20} MiB")
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise AuditError(f"cannot read {_rel(path, root)!r}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise AuditError(f"{_rel(path, root)}: malformed JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise AuditError(f"{_rel(path, root)}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _entries(doc: Mapping[str, Any], where: str) -> list[tuple[str, Mapping[str, Any]]]:
    raw = doc.get("output_artifacts")
    if raw is None:
        return []
    items: list[tuple[str | None, Any]]
    if isinstance(raw, list):
        items = [(None, e) for e in raw]
    elif isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        raise AuditError(f"{where}: output_artifacts must be a list or an object, got {type(raw).__name__}")
    out = []
    for i, (key, entry) in enumerate(items):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, Mapping):
            raise AuditError(f"{where}: output_artifacts[{key or i}] must be a path or an object")
        path = next((entry[k] for k in _PATH_KEYS if isinstance(entry.get(k), str) and entry[k]), key)
        if not path:
            raise AuditError(f"{where}: output_artifacts[{i}] names no path ({', '.join(_PATH_KEYS)})")
        out.append((str(path), entry))
    return out


def _recorded_hash(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(algorithm, lowercase hex) as recorded, or None when no hash is recorded."""
    for key in _HASH_KEYS:
        value = entry.get(key)
        if isinstance(value, Mapping):
            algo, value = str(value.get("algorithm", "")).lower(), value.get("value")
        else:
            algo = key if key in _STRONG else str(entry.get("hash_algorithm", "")).lower()
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if ":" in value:
            algo, _, value = value.partition(":")
            algo = algo.lower()
        return (algo or _BY_LENGTH.get(len(value), "unknown"), value.lower())
    return None


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_entry(path_text: str, entry: Mapping[str, Any], meta: Path, root: Path,
                 verify: SignatureCheck | None) -> Iterator[Finding]:
    loc = Location(_rel(meta, root))
    name = path_text
    if "://" in path_text and not path_text.startswith("file://"):
        yield _finding(A.REMOTE, "Artifact", name, "remote artifact: its hash cannot be checked from the run "
                       "directory", loc)
        target = None
    else:
        target = (meta.parent / path_text.removeprefix("file://")).resolve()
        if target != root and root not in target.parents:
            yield _finding(A.ESCAPES, "Artifact", name, f"path {path_text!r} leaves the run directory", loc)
            return
        name = _rel(target, root)
    recorded = _recorded_hash(entry)
    if recorded is None:
        yield _finding(A.NO_HASH, "Artifact", name, "no hash recorded (sha256 expected)", loc)
    if target is not None and not target.exists():
        yield _finding(A.MISSING, "Artifact", name, "listed in the metadata but absent from the run directory", loc)
        target = None
    if recorded is not None and target is not None:
        algo, value = recorded
        if algo not in _STRONG:
            yield _finding(A.WEAK_HASH, "Artifact", name, f"hash algorithm {algo!r} (use sha256 or stronger)", loc)
        elif target.is_dir():
            yield _finding(A.REMOTE, "Artifact", name, "a directory: one recorded hash cannot cover it; sign it "
                           "(ztid sign) so each file is hashed", loc, "dir")
        elif _file_digest(target, algo) != value:
            yield _finding(A.MISMATCH, "Artifact", name, f"{algo} of the file differs from the recorded one", loc)
    recorded = next((str(entry[k]) for k in _SIG_KEYS if entry.get(k)), None)
    signature: Path | str | None = recorded
    if recorded is not None and "://" not in recorded:
        candidate = (meta.parent / recorded).resolve()
        if (candidate == root or root in candidate.parents) and candidate.is_file():
            signature = candidate
    elif recorded is None and target is not None:
        signature = next((target.with_name(target.name + s) for s in _SIG_SUFFIXES
                          if target.with_name(target.name + s).is_file()), None)
    if signature is None:
        yield _finding(A.NO_SIGNATURE, "Artifact", name, "no signature recorded", loc)
    elif target is not None:
        if verify is None:
            yield _finding(A.UNVERIFIED, "Artifact", name, "signature recorded but not verified by this audit", loc)
        else:
            try:
                verdict = verify(target, signature, entry=entry, run_dir=root)
            except SigningError as exc:  # a verifier may raise its refusal instead of returning it
                verdict = SignatureVerdict(False, str(exc))
            if not verdict.valid:
                yield _finding(A.BAD_SIGNATURE, "Artifact", name, f"signature does not verify: {verdict.detail}", loc)


def _credential_reason(path: Path) -> str | None:
    name = path.name.lower()
    parts = [p.lower() for p in path.parts]
    if name in _CRED_NAMES or name.startswith(".env.") or name.endswith(_CRED_SUFFIXES):
        return f"credential file {path.name!r}"
    if ".aws" in parts and name in ("credentials", "config"):
        return "AWS credentials file"
    if (".docker" in parts and name == "config.json") or (".kube" in parts and name == "config"):
        return "registry/cluster credentials file"
    if name.endswith(_KEY_SUFFIXES) or name.endswith(".json"):
        try:
            with path.open("rb") as f:
                head = f.read(1 << 16)
        except OSError:
            return None
        if b"PRIVATE KEY-----" in head:
            return "private key"
        if name.endswith(".json") and b'"private_key"' in head:
            return "service-account key file"
    return None


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fn in sorted(filenames):
            yield Path(dirpath) / fn


def audit_artifacts(run_dir: str | os.PathLike[str], *, verify_signature: SignatureCheck | None = None) -> Report:
    """Audit one pipeline run directory.

    Args:
        run_dir: the run's directory.
        verify_signature: the hook that verifies recorded signatures (e.g. ztid model signatures);
            without it, signatures are reported as present but not verified.

    Raises:
        AuditError: ``run_dir`` is not a readable directory, or a metadata file is malformed.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise AuditError(f"cannot read run directory {str(run_dir)!r}: not a directory")
    root = root.resolve()
    findings: list[Finding] = []
    metadata_files = 0
    for path in _walk(root):
        rel = _rel(path, root)
        if path.is_symlink():
            continue
        if path.name in METADATA_NAMES:
            metadata_files += 1
            doc = _load_metadata(path, root)
            for path_text, entry in _entries(doc, rel):
                findings.extend(_check_entry(path_text, entry, path, root, verify_signature))
        reason = _credential_reason(path)
        if reason:
            findings.append(_finding(A.CREDENTIAL, "File", rel, f"{reason} left in the run directory", Location(rel)))
    if metadata_files == 0:
        findings.append(_finding(A.NO_METADATA, "Run", root.name, "no metadata.json or artifact_info.json: "
                                 "nothing records what this run produced", None))
    return Report.build("artifacts", findings, ARTIFACT_RULES, inputs=[str(run_dir)])
