"""The decision log's byte format: canonical JSON lines, the SHA-256 chain, checkpoint signatures.

One line per record, UTF-8, ``\\n``-terminated, each the *canonical* JSON of an object (keys sorted,
separators ``,`` and ``:``, non-ASCII escaped), so anyone can re-serialise a line and get the same
bytes. Every record has ``kind`` (``header``, ``decision`` or ``checkpoint``), ``seq`` (its 0-based
line index) and ``prev``: the lowercase hex SHA-256 of the previous line's bytes without the newline.
The header (line 1, ``seq`` 0) has ``prev`` = :data:`GENESIS` (64 zeros). Hence::

    prev(line k+1) = sha256(line k bytes without "\\n")      e.g. head -n1 LOG | tr -d '\\n' | sha256sum

A checkpoint additionally carries ``signer`` (SPIFFE ID), ``alg``, ``chain`` (the signer's X509-SVID
chain, PEM, leaf first) and ``sig``: base64 of the signature over the canonical JSON of the checkpoint
object *without* its ``sig`` key. Because ``prev`` commits to every earlier line, one valid checkpoint
signature commits to the whole log before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ztid.errors import AuditError

__all__ = [
    "FORMAT_VERSION",
    "GENESIS",
    "MAX_LINE_BYTES",
    "alg_for",
    "canonical",
    "line_hash",
    "parse_time",
    "rfc3339",
    "sign_payload",
    "signed_bytes",
    "verify_payload",
]

FORMAT_VERSION: Final = 1
GENESIS: Final = "0" * 64
MAX_LINE_BYTES: Final = 256 * 1024


def canonical(obj: dict[str, Any]) -> bytes:
    """Return the canonical JSON bytes of ``obj`` (no trailing newline).

    Raises:
        AuditError: ``obj`` holds something JSON cannot represent (or a float NaN/infinity).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise AuditError(f"decision log record is not JSON-serialisable: {exc}") from exc


def line_hash(line: bytes) -> str:
    """SHA-256 (lowercase hex) of one line's bytes, without its newline."""
    return hashlib.sha256(line).hexdigest()


def rfc3339(moment: datetime) -> str:
    """``2026-11-21T20:49:01.123456Z`` (UTC, microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse the log's RFC 3339 UTC time.

    Raises:
        AuditError: not a time in the log's format.
    """
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError) as exc:
        raise AuditError(f"bad time {text!r} in decision log") from exc
    return moment.replace(tzinfo=UTC)


def signed_bytes(checkpoint: dict[str, Any]) -> bytes:
    """The bytes a checkpoint signature covers: its canonical JSON without ``sig``."""
    return canonical({k: v for k, v in checkpoint.items() if k != "sig"})


def alg_for(key: Any) -> str:
    """The checkpoint ``alg`` name for a key (``ES256``, ``ES384``, ``ES512``, ``PS256``, ``EdDSA``), or ""."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "PS256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    return ""


_HASHES: Final = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}


def sign_payload(private_key: Any, payload: bytes) -> str:
    """Sign ``payload`` with the algorithm :func:`alg_for` names; return the base64 signature.

    Raises:
        AuditError: the key type cannot sign checkpoints.
    """
    alg = alg_for(private_key)
    if alg in _HASHES:
        sig = private_key.sign(payload, ec.ECDSA(_HASHES[alg]()))
    elif alg == "PS256":
        sig = private_key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    elif alg == "EdDSA":
        sig = private_key.sign(payload)
    else:
        raise AuditError(f"cannot sign decision log checkpoints with a {type(private_key).__name__}")
    return base64.b64encode(sig).decode()


def verify_payload(public_key: Any, alg: str, signature_b64: str, payload: bytes) -> bool:
    """True when ``signature_b64`` is a valid ``alg`` signature of ``payload`` by ``public_key``."""
    if not isinstance(signature_b64, str) or alg_for(public_key) != alg:
        return False
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        if alg in _HASHES:
            public_key.verify(sig, payload, ec.ECDSA(_HASHES[alg]()))
        elif alg == "PS256":
            public_key.verify(sig, payload, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            public_key.verify(sig, payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
