"""The OpenSSF model-signing wire format as ztid writes and reads it: Sigstore bundle, DSSE, in-toto.

A signature file is a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) exactly as
``model_signing sign certificate`` writes it::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"x509CertificateChain": {"certificates": [{"rawBytes": b64(DER leaf)},
                                                                       {"rawBytes": b64(DER intermediate)}...]},
                              "tlogEntries": []},
     "dsseEnvelope": {"payload": b64(statement JSON), "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": b64(ECDSA over PAE(payload)), "keyid": ""}]}}

The statement is model-signing's v1.0 in-toto statement (subject = model name and the sha256 over the
per-file digests; ``predicate.serialization`` and ``predicate.resources`` = one (name, algorithm,
digest) per file). ztid adds one member, which model-signing v1.0 verifiers ignore by design
("any other field should be ignored") and which the DSSE signature covers::

    "predicate": {..., "ztid": {"version": "1", "signed_at": "2026-11-21T21:00:00Z",
                                "spiffe_id": "spiffe://ai-platform.example/training/job-7"}}

The bundle carries no trusted time (no transparency-log entry, no RFC 3161 timestamp), so
``signed_at`` is the signer's own, signed claim: see docs/signing.md for what that does and does not
prove. The leaf key must be EC P-256, P-384 or P-521 (hashed with SHA-256/384/512), as model-signing
requires. This module is the only one that touches model-signing's internal modules; every foreign
exception is translated here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ztid import _strictjson
from ztid.errors import SigningError

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "CLAIM_KEY",
    "Claim",
    "MAX_SIGNATURE_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "ParsedBundle",
    "Statement",
    "build_bundle",
    "check_signing_key",
    "format_time",
    "parse_bundle",
    "parse_statement",
    "parse_time",
    "pae",
    "verify_envelope",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
CLAIM_KEY = "ztid"
CLAIM_VERSION = "1"  # a string: protobuf Struct would turn a number into 1.0
MAX_SIGNATURE_BYTES = 64 << 20  # a manifest of ~400k files; anything larger is refused unread
MAX_CHAIN = 8
_CURVES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}
_TIME = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z\Z")


def _fail(message: str) -> SigningError:
    return SigningError(message)


def _json(data: bytes, what: str) -> Any:
    try:
        return _strictjson.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(f"{what} is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise _fail(f"{what} is not JSON: {str(exc)[:120]}") from exc


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise _fail(f"{where} must be a JSON object")
    if key not in obj:
        raise _fail(f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _fail(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise _fail(f"{where} is not valid base64") from exc


def format_time(when: dt.datetime) -> str:
    """``when`` as RFC 3339 UTC with whole seconds (``2026-11-21T21:00:00Z``)."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any, where: str) -> dt.datetime:
    """Strict inverse of :func:`format_time`.

    Raises:
        SigningError: anything but ``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant.
    """
    m = _TIME.match(text) if isinstance(text, str) else None
    if m is None:
        raise _fail(f"{where} must be an RFC 3339 UTC time like 2026-11-21T21:00:00Z, got {str(text)[:40]!r}")
    try:
        return dt.datetime(*map(int, m.groups()), tzinfo=dt.timezone.utc)
    except ValueError as exc:
        raise _fail(f"{where} is not a real time: {text!r}") from exc


def check_signing_key(public_key: Any) -> hashes.HashAlgorithm:
    """The hash model-signing pairs with this key; only EC P-256/384/521 keys are accepted.

    Raises:
        SigningError: any other key type or curve.
    """
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise _fail(f"model-signing takes EC P-256/P-384/P-521 keys only, not {type(public_key).__name__.lstrip('_')}")
    algo = _CURVES.get(public_key.curve.name)
    if algo is None:
        raise _fail(f"model-signing takes EC P-256/P-384/P-521 keys only, not curve {public_key.curve.name}")
    return algo()


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding (as model-signing computes it)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


@dataclass(frozen=True)
class Claim:
    """ztid's signed claim inside the predicate: who says they signed, and when."""

    spiffe_id: str
    signed_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"version": CLAIM_VERSION, "signed_at": format_time(self.signed_at), "spiffe_id": self.spiffe_id}


def build_bundle(manifest: Any, chain: Sequence[x509.Certificate], private_key: ec.EllipticCurvePrivateKey,
                 claim: Claim) -> bytes:
    """Sign ``manifest`` (a ``model_signing.manifest.Manifest``) and return the bundle JSON bytes.

    The key stays in memory; no file is written. The caller checks the SVID's validity.

    Raises:
        SigningError: the key is not EC P-256/384/521.
    """
    from google.protobuf import json_format
    from model_signing._signing import signing as ms_signing
    from sigstore_models import intoto
    from sigstore_models.bundle import v1 as bundle_v1
    from sigstore_models.common import v1 as common_v1

    algo = check_signing_key(private_key.public_key())
    payload = ms_signing.Payload(manifest)
    statement = payload.statement.pb
    statement.predicate[CLAIM_KEY] = claim.to_json()
    raw = json_format.MessageToJson(statement).encode("utf-8")
    sig = private_key.sign(pae(raw), ec.ECDSA(algo))
    envelope = intoto.Envelope(payload=base64.b64encode(raw), payload_type=PAYLOAD_TYPE,
                               signatures=[intoto.Signature(sig=base64.b64encode(sig), keyid="")])
    certs = [common_v1.X509Certificate(raw_bytes=base64.b64encode(c.public_bytes(serialization.Encoding.DER)))
             for c in chain]
    material = bundle_v1.VerificationMaterial(
        x509_certificate_chain=common_v1.X509CertificateChain(certificates=certs), tlog_entries=[])
    bundle = bundle_v1.Bundle(media_type=BUNDLE_MEDIA_TYPE, verification_material=material, dsse_envelope=envelope)
    return bundle.to_json().encode("utf-8")


@dataclass(frozen=True)
class ParsedBundle:
    """A signature file, parsed but not yet verified."""

    chain: tuple[x509.Certificate, ...]
    payload: bytes
    signature: bytes


def parse_bundle(data: bytes) -> ParsedBundle:
    """Parse a signature file strictly (nothing is verified yet).

    Raises:
        SigningError: not a model-signing certificate bundle as described in the module docstring.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise _fail(f"signature must be bytes, not {type(data).__name__}")
    if len(data) > MAX_SIGNATURE_BYTES:
        raise _fail(f"signature file is larger than {MAX_SIGNATURE_BYTES >> 20} MiB")
    doc = _json(bytes(data), "signature file")
    media = _get(doc, "mediaType", str, "bundle")
    if media != BUNDLE_MEDIA_TYPE:
        raise _fail(f"bundle mediaType must be {BUNDLE_MEDIA_TYPE!r}, got {media[:80]!r}")
    material = _get(doc, "verificationMaterial", dict, "bundle")
    if "x509CertificateChain" not in material:
        kinds = ", ".join(sorted(k for k in material if k != "tlogEntries")) or "nothing"
        raise _fail(f"bundle carries no X.509 certificate chain ({kinds}): not a certificate signature")
    certs = _get(_get(material, "x509CertificateChain", dict, "verificationMaterial"), "certificates", list,
                 "x509CertificateChain")
    if not 1 <= len(certs) <= MAX_CHAIN:
        raise _fail(f"certificate chain must hold 1 to {MAX_CHAIN} certificates, got {len(certs)}")
    chain = []
    for i, item in enumerate(certs):
        der = _b64(_get(item, "rawBytes", str, f"certificates[{i}]"), f"certificates[{i}].rawBytes")
        try:
            cert = x509.load_der_x509_certificate(der)
            # cryptography parses lazily: read every field now, so a malformed one fails here, typed
            cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.public_key()
            cert.not_valid_before_utc, cert.not_valid_after_utc, list(cert.extensions)
        except Exception as exc:  # ValueError, UnsupportedAlgorithm, DuplicateExtension…: all mean malformed
            raise _fail(f"certificates[{i}] is not a well-formed DER certificate: {str(exc)[:120]}") from exc
        chain.append(cert)
    env = _get(doc, "dsseEnvelope", dict, "bundle")
    ptype = _get(env, "payloadType", str, "dsseEnvelope")
    if ptype != PAYLOAD_TYPE:
        raise _fail(f"dsseEnvelope.payloadType must be {PAYLOAD_TYPE!r}, got {ptype[:80]!r}")
    payload = _b64(_get(env, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    sigs = _get(env, "signatures", list, "dsseEnvelope")
    if len(sigs) != 1:
        raise _fail(f"dsseEnvelope must hold exactly one signature, got {len(sigs)}")
    sig = _b64(_get(sigs[0], "sig", str, "signatures[0]"), "signatures[0].sig")
    return ParsedBundle(chain=tuple(chain), payload=payload, signature=sig)


def verify_envelope(parsed: ParsedBundle) -> None:
    """Check the DSSE signature with the leaf certificate's key (the chain is checked elsewhere).

    Raises:
        SigningError: unsupported key, or the signature does not match the payload.
    """
    try:
        key = parsed.chain[0].public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _fail(f"the signing certificate's public key is unreadable: {exc}") from exc
    algo = check_signing_key(key)
    try:
        key.verify(parsed.signature, pae(parsed.payload), ec.ECDSA(algo))
    except InvalidSignature:
        raise _fail("the DSSE signature does not match the signed statement (signature file tampered)") from None


@dataclass(frozen=True)
class Statement:
    """The signed in-toto statement: ztid's claim, the model manifest, and its digests."""

    claim: Claim
    manifest: Any  # model_signing.manifest.Manifest
    model_name: str
    model_digest: str
    serialization: dict[str, Any]
    resources: tuple[tuple[str, str, str], ...]  # (name, algorithm, hex digest), sorted by name


def _check_name(name: str) -> None:
    if name == ".":
        return
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise _fail(f"manifest names an unsafe path {name[:120]!r} (absolute, '..', or not normalised)")


def parse_statement(payload: bytes) -> Statement:
    """Parse the signed statement (after :func:`verify_envelope`) and ztid's claim in it.

    Raises:
        SigningError: not a model-signing v1.0 statement, no ztid claim, or an unsafe resource path.
    """
    doc = _json(payload, "signed statement")
    if _get(doc, "_type", str, "statement") != STATEMENT_TYPE:
        raise _fail(f"statement _type must be {STATEMENT_TYPE!r}")
    if _get(doc, "predicateType", str, "statement") != PREDICATE_TYPE:
        raise _fail(f"statement predicateType must be {PREDICATE_TYPE!r} (model-signing v1.0)")
    subjects = _get(doc, "subject", list, "statement")
    if len(subjects) != 1:
        raise _fail(f"statement must have exactly one subject, got {len(subjects)}")
    name = _get(subjects[0], "name", str, "subject[0]")
    digest = _get(_get(subjects[0], "digest", dict, "subject[0]"), "sha256", str, "subject[0].digest")
    predicate = _get(doc, "predicate", dict, "statement")
    if CLAIM_KEY not in predicate:
        raise _fail("the signature carries no ztid claim (signer and signing time): not signed by ztid, so the "
                    "signing time cannot be checked")
    raw_claim = _get(predicate, CLAIM_KEY, dict, "predicate")
    version = _get(raw_claim, "version", str, "predicate.ztid")
    if version != CLAIM_VERSION:
        raise _fail(f"predicate.ztid.version {version[:20]!r} is not supported (expected {CLAIM_VERSION!r})")
    claim = Claim(spiffe_id=_get(raw_claim, "spiffe_id", str, "predicate.ztid"),
                  signed_at=parse_time(raw_claim.get("signed_at"), "predicate.ztid.signed_at"))
    serialization_args = _get(predicate, "serialization", dict, "predicate")
    resources = []
    for i, res in enumerate(_get(predicate, "resources", list, "predicate")):
        rname = _get(res, "name", str, f"resources[{i}]")
        _check_name(rname.split(":", 1)[0] if serialization_args.get("method") == "shards" else rname)
        resources.append((rname, _get(res, "algorithm", str, f"resources[{i}]"), _get(res, "digest", str, f"resources[{i}]")))
    from model_signing._signing import signing as ms_signing

    try:
        manifest = ms_signing.dsse_payload_to_manifest(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _fail(f"signed manifest is inconsistent: {str(exc)[:200]}") from exc
    return Statement(claim=claim, manifest=manifest, model_name=name, model_digest=digest,
                     serialization=dict(serialization_args), resources=tuple(sorted(resources)))
