"""Model signing with SVIDs: sign in the OpenSSF model-signing format, verify with the signer pinned.

>>> signed = sign_model("out/model", training_svid)            # writes out/model.sig
>>> v = verify_model("out/model", bundles=bundles, policy=policy, target="registry")
>>> v.allowed, str(v.signer), v.decision.code
(True, 'spiffe://ai-platform.example/training/job-7', 'allowed')
>>> require_signed("out/model", bundles=bundles, policy=policy)  # for loaders: raises SigningError

What ztid adds to model-signing's own verification (which checks the files against the manifest and
the certificate chain against a pool of roots, at the leaf's notBefore):

1. the chain is verified against the bundle of the signer's **own** trust domain only
   (:func:`ztid.svid.verify_x509_svid`), never a pool of roots, at the signing time;
2. the signing time is ztid's signed claim inside the statement (``predicate.ztid.signed_at``):
   the SVID must have been valid then, and the claim may not lie in the future;
3. the signer's SPIFFE ID must map to an identity the policy allows to ``write`` (by default) the
   artifact's target component (``registry`` by default).

A signature file is byte-compatible with ``model_signing verify certificate`` (give it the trust
bundle's root as ``--certificate_chain``). Signing keys must be EC P-256/P-384/P-521.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ztid._atomic import write_atomic
from ztid.bundle import Bundle, BundleSet
from ztid.errors import SigningError, SvidError, UsageError
from ztid.identity import Identity
from ztid.policy import Decision, Policy
from ztid.signing_format import MAX_SIGNATURE_BYTES, Claim, build_bundle, check_signing_key, parse_bundle, parse_statement, verify_envelope
from ztid.spiffeid import SpiffeId
from ztid.svid import X509Svid, verify_x509_svid

__all__ = [
    "CLOCK_SKEW",
    "FileDigest",
    "ModelVerification",
    "SignedModel",
    "default_signature_path",
    "require_signed",
    "sign_model",
    "verify_model",
]

CLOCK_SKEW = dt.timedelta(minutes=5)  # how far in the future a signing-time claim may lie
_MAX_LISTED = 8


@dataclass(frozen=True)
class FileDigest:
    """One entry of the signed manifest: a file (``.`` for a single-file model) and its digest."""

    name: str
    algorithm: str
    digest: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "algorithm": self.algorithm, "digest": self.digest}


@dataclass(frozen=True)
class SignedModel:
    """What :func:`sign_model` wrote.

    Attributes:
        path: the model file or directory.
        signature: the signature file written.
        signer: the SVID's SPIFFE ID.
        signed_at: the signing time recorded (and signed) in the statement.
        digests: one entry per file, sorted by name.
    """

    path: Path
    signature: Path
    signer: SpiffeId
    signed_at: dt.datetime
    digests: tuple[FileDigest, ...]


@dataclass(frozen=True)
class ModelVerification:
    """A model whose signature verified; :attr:`decision` says whether its signer may publish it.

    Attributes:
        path: the model file or directory.
        signature: the signature file read.
        signer: the signer's SPIFFE ID (from the verified leaf).
        identity: what the policy makes of it (component, tenant…).
        decision: ``policy.decide(signer, target, action)``; ``allowed`` is its ``allowed``.
        signed_at: the signing time the signer claimed (the SVID was valid then).
        signer_not_after: when the signer's verified chain stopped (or stops) being valid.
        model_digest: sha256 over the per-file digests (the statement's subject digest).
        digests: one entry per file, sorted by name.
        ignored: paths the signer excluded from the manifest (e.g. the signature file itself).
        content_checked: whether the files were hashed and compared (False only when a loader stopped
            at a deny).
    """

    path: Path
    signature: Path
    signer: SpiffeId
    identity: Identity
    decision: Decision
    signed_at: dt.datetime
    signer_not_after: dt.datetime
    model_digest: str
    digests: tuple[FileDigest, ...]
    ignored: tuple[str, ...]
    content_checked: bool = True

    @property
    def allowed(self) -> bool:
        """True when the signature is intact and the policy allows the signer (``decision.allowed``)."""
        return self.content_checked and self.decision.allowed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of ``ztid verify --json``)."""
        d = self.decision
        ident = self.identity
        return {
            "valid": self.allowed, "path": str(self.path), "signature": str(self.signature),
            "signer": str(self.signer),
            "identity": {"component": ident.component, "tenant": ident.tenant, "workload": ident.workload},
            "decision": {"allowed": d.allowed, "code": d.code, "reason": d.reason, "rule": d.rule,
                         "target": d.target, "action": d.action, "policy_digest": d.policy_digest, "mode": d.mode,
                         "would_deny": d.would_deny},
            "signed_at": _iso(self.signed_at), "signer_not_after": _iso(self.signer_not_after),
            "model_digest": self.model_digest, "digests": [f.to_dict() for f in self.digests],
            "ignored": list(self.ignored), "content_checked": self.content_checked,
        }


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_signature_path(path: str | os.PathLike[str]) -> Path:
    """``<path>.sig`` beside the model file or directory (outside the directory it signs)."""
    p = Path(path)
    return p.with_name(p.name + ".sig") if p.name else Path(str(p).rstrip("/\\") + ".sig")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _hashing_config(serialization: Mapping[str, Any], ignored: Iterable[str]) -> Any:
    from model_signing import hashing

    method, algo = serialization.get("method"), serialization.get("hash_type")
    if serialization.get("allow_symlinks") is not False:
        raise SigningError("the signature was made with allow_symlinks; ztid verifies only signatures that refuse symlinks")
    if algo not in ("sha256", "blake2", "blake3"):
        raise SigningError(f"unsupported hash_type {str(algo)[:40]!r} in the signed serialization")
    cfg = hashing.Config()
    if method == "files":
        cfg.use_file_serialization(hashing_algorithm=algo, allow_symlinks=False)
    elif method == "shards":
        shard = serialization.get("shard_size")
        if not isinstance(shard, int) or isinstance(shard, bool) or shard <= 0:
            raise SigningError(f"invalid shard_size {shard!r} in the signed serialization")
        cfg.use_shard_serialization(hashing_algorithm=algo, shard_size=shard, allow_symlinks=False)
    else:
        raise SigningError(f"unsupported serialization method {str(method)[:40]!r}")
    return cfg.set_ignored_paths(paths=list(ignored), ignore_git_paths=False)


def _hash(path: Path, cfg: Any) -> Any:
    try:
        return cfg.hash(path)
    except ValueError as exc:  # a symlink, a socket, a vanished file
        raise SigningError(f"cannot hash model {str(path)!r}: {exc}") from exc
    except OSError as exc:
        raise SigningError(f"cannot read model {str(path)!r}: {exc.strerror or exc}") from exc


def _digests(manifest: Any) -> tuple[FileDigest, ...]:
    return tuple(FileDigest(str(rd.identifier), rd.digest.algorithm, rd.digest.digest_hex)
                 for rd in manifest.resource_descriptors())


def _ignored_inside(model: Path, signature: Path) -> list[str]:
    if not model.is_dir():
        return []
    try:
        return [signature.resolve().relative_to(model.resolve()).as_posix()]
    except ValueError:
        return []


def _resolve_signer(signer: Any) -> X509Svid:
    if isinstance(signer, X509Svid):
        return signer
    snapshot = getattr(signer, "snapshot", None)
    if callable(snapshot):
        return snapshot().svid
    raise UsageError(f"signer must be an X509Svid or an SvidSource, not {type(signer).__name__}")


def sign_model(path: str | os.PathLike[str], signer: Any, *, signature: str | os.PathLike[str] | None = None,
               ignore_paths: Iterable[str] = ()) -> SignedModel:
    """Sign a model file or directory with the workload's SVID; write the signature file.

    The private key never leaves memory. Every file under a directory is hashed (git files too);
    ``ignore_paths`` (relative to the directory) are excluded and the exclusion is signed. A signature
    written inside the directory is excluded automatically.

    Args:
        path: the model file or directory.
        signer: an :class:`~ztid.svid.X509Svid`, or an SVID source (its current snapshot is used).
        signature: where to write the signature (default ``<path>.sig``).
        ignore_paths: directory-relative paths to leave out of the manifest.

    Raises:
        SigningError: the model is unreadable or holds a symlink/special file, the SVID is not valid now,
            or its key is not EC P-256/P-384/P-521; the signature file cannot be written.
        UsageError: ``signer`` is neither an X509Svid nor a source.
        SourceError: the source has no current SVID.
    """
    svid = _resolve_signer(signer)
    model = Path(path)
    if not model.exists():
        raise SigningError(f"model {str(model)!r} does not exist")
    check_signing_key(svid.leaf.public_key())
    now = _now().replace(microsecond=0)
    for cert in svid.cert_chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SigningError(f"SVID {svid.spiffe_id} is not valid now (certificate {cert.subject.rfc4514_string()!r} "
                               f"is valid {_iso(cert.not_valid_before_utc)} to {_iso(cert.not_valid_after_utc)}); "
                               "a signature made with it would be refused")
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    if model.is_file() and sig_path.resolve() == model.resolve():
        raise SigningError("the signature path is the model file itself")
    ignored = [*(str(p) for p in ignore_paths), *_ignored_inside(model, sig_path)]
    for p in ignored:
        if p.startswith("/") or ".." in Path(p).parts:
            raise SigningError(f"ignore path {p!r} must be relative to the model directory, without '..'")
    cfg = _hashing_config({"method": "files", "hash_type": "sha256", "allow_symlinks": False}, ignored)
    manifest = _hash(model, cfg)
    data = build_bundle(manifest, svid.cert_chain, svid.private_key, Claim(str(svid.spiffe_id), now))
    try:
        write_atomic(sig_path, data)
    except OSError as exc:
        raise SigningError(f"cannot write signature {str(sig_path)!r}: {exc.strerror or exc}") from exc
    return SignedModel(path=model, signature=sig_path, signer=svid.spiffe_id, signed_at=now, digests=_digests(manifest))


def _diff(actual: Any, expected: Any) -> str:
    have = {str(rd.identifier): rd.digest for rd in actual.resource_descriptors()}
    want = {str(rd.identifier): rd.digest for rd in expected.resource_descriptors()}

    def listed(names: Iterable[str]) -> str:
        names = sorted(names)
        more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
        return ", ".join(repr(n) for n in names[:_MAX_LISTED]) + more

    parts = []
    changed = [n for n in have.keys() & want.keys() if have[n] != want[n]]
    if changed:
        parts.append(f"modified: {listed(changed)}")
    if have.keys() - want.keys():
        parts.append(f"not signed (extra): {listed(have.keys() - want.keys())}")
    if want.keys() - have.keys():
        parts.append(f"missing: {listed(want.keys() - have.keys())}")
    return "; ".join(parts) or "manifests differ"


def _verify(path: str | os.PathLike[str], signature: str | os.PathLike[str] | None, bundles: Any, policy: Any,
            target: str, action: str, stop_on_deny: bool) -> ModelVerification:
    if not isinstance(bundles, (BundleSet, Bundle)):
        raise UsageError(f"bundles must be a BundleSet or Bundle, not {type(bundles).__name__}")
    if not isinstance(policy, Policy):
        raise UsageError(f"policy must be a ztid Policy, not {type(policy).__name__}")
    model = Path(path)
    if not model.exists():
        raise SigningError(f"model {str(model)!r} does not exist")
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    try:
        with sig_path.open("rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES + 1)  # parse_bundle refuses anything longer, unread
    except FileNotFoundError:
        raise SigningError(f"model {str(model)!r} is unsigned: no signature at {str(sig_path)!r}") from None
    except OSError as exc:
        raise SigningError(f"cannot read signature {str(sig_path)!r}: {exc.strerror or exc}") from exc
    parsed = parse_bundle(data)
    verify_envelope(parsed)
    statement = parse_statement(parsed.payload)
    signed_at = statement.claim.signed_at
    try:
        verified = verify_x509_svid(list(parsed.chain), bundles, at=signed_at)
    except SvidError as exc:
        raise SigningError(f"signer refused: {exc} (checked at the claimed signing time {_iso(signed_at)})") from exc
    if str(verified.spiffe_id) != statement.claim.spiffe_id:
        raise SigningError(f"the ztid claim names {statement.claim.spiffe_id[:200]!r} but the certificate is "
                           f"{verified.spiffe_id}")
    if signed_at > _now() + CLOCK_SKEW:
        raise SigningError(f"the claimed signing time {_iso(signed_at)} lies in the future")
    decision = policy.decide(verified.spiffe_id, target, action)
    ignored = tuple(str(p) for p in statement.serialization.get("ignore_paths", ()) or ())
    result = ModelVerification(
        path=model, signature=sig_path, signer=verified.spiffe_id, identity=policy.identify(verified.spiffe_id),
        decision=decision, signed_at=signed_at, signer_not_after=verified.not_after,
        model_digest=statement.model_digest, digests=_digests(statement.manifest), ignored=ignored,
        content_checked=False)
    if stop_on_deny and not decision.allowed:
        return result
    actual = _hash(model, _hashing_config(statement.serialization, ignored))
    if actual != statement.manifest:
        raise SigningError(f"model {str(model)!r} does not match its signature: {_diff(actual, statement.manifest)}")
    return dataclasses.replace(result, content_checked=True)


def verify_model(path: str | os.PathLike[str], *, signature: str | os.PathLike[str] | None = None,
                 bundles: BundleSet | Bundle, policy: Policy, target: str = "registry",
                 action: str = "write") -> ModelVerification:
    """Verify a model's signature, its signer's chain at signing time, and what the policy says.

    A returned value means the signature is intact, made by a valid SVID of a trusted trust domain,
    over exactly these files; ``.allowed`` (``.decision``) says whether the policy lets the signer
    ``action`` the ``target`` component. Anything short of an intact signature raises.

    Args:
        path: the model file or directory.
        signature: the signature file (default ``<path>.sig``).
        bundles: trust bundles; the signer's chain is checked against its own trust domain's only.
        policy: the policy that says who may publish to ``target``.
        target: the component the model is published to (default ``registry``).
        action: the action the signer needs on ``target`` (default ``write``).

    Raises:
        SigningError: no signature, a malformed or tampered signature, a chain that does not verify
            against the signer's own trust domain at the signing time (expired then, foreign CA…),
            a signing time in the future, or files that differ from the manifest (modified, extra,
            missing, renamed).
        UsageError: ``bundles`` or ``policy`` has the wrong type.
    """
    return _verify(path, signature, bundles, policy, target, action, stop_on_deny=False)


def require_signed(path: str | os.PathLike[str], target: str = "registry", *, bundles: BundleSet | Bundle,
                   policy: Policy, signature: str | os.PathLike[str] | None = None,
                   action: str = "write") -> ModelVerification:
    """For loaders: return the verification, or raise unless the model is signed by an allowed signer.

    Call before ``torch.load``/``from_pretrained``: an unsigned, tampered or wrongly signed model
    never reaches the deserializer. A policy deny is checked before the files are hashed.

    Raises:
        SigningError: as :func:`verify_model`, and when the policy does not allow the signer to
            ``action`` the ``target`` (the message quotes the decision's code and reason).
        UsageError: ``bundles`` or ``policy`` has the wrong type.
    """
    result = _verify(path, signature, bundles, policy, target, action, stop_on_deny=True)
    if not result.decision.allowed:
        d = result.decision
        raise SigningError(f"model {str(path)!r} was signed by {result.signer}, which the policy does not allow to "
                           f"{action} {target!r} [{d.code}]: {d.reason}")
    return result
