"""Every exception ztid raises, in one tree.

::

    ZtidError
    ├── UsageError(ValueError)         a caller asked for something meaningless (empty audience, bad option)
    ├── IdentityError(ValueError)      malformed SPIFFE ID or trust domain; ``.value`` holds the input
    ├── BundleError                    trust bundle unreadable or malformed (PEM, SPIFFE bundle JSON)
    ├── SvidError                      an SVID is malformed, fails a SPIFFE rule, or does not verify
    │   └── VerificationError          chain/signature/time/trust-domain check failed
    ├── SourceError                    an SVID source cannot serve (unreachable, closed, fail-closed stop)
    ├── PolicyError(ValueError)        policy.yaml invalid; ``.location`` is "policy.yaml:14: components.x"
    ├── ConfigError(ValueError)        a component's configuration file is invalid (located like PolicyError)
    ├── PermissionDenied               an enforcement point said no; ``.decision`` is the Decision
    ├── TransportError                 an mTLS/gRPC connection could not be established or authorized
    ├── CryptoError
    │   ├── KeyringError               key material unusable: bad length, unknown key id, loose permissions
    │   ├── KeyReleaseError            the key service refused or could not release a key
    │   ├── SealedFormatError          a sealed file's header is malformed (names the field)
    │   ├── ChannelClosed              an encrypted channel was closed or failed earlier; nothing more passes
    │   └── DecryptionError            always "decryption failed", whatever the cause (as Tink does)
    │       ├── FrameOrderError        a channel frame was replayed, reordered, dropped or from an unknown epoch
    │       └── TruncatedError         a channel stream ended inside a frame
    ├── SigningError                   an artifact signature is missing, invalid, or its signer is not allowed
    └── AuditError                     a decision log or audit input is malformed or has been tampered with

Foreign exceptions (``ssl.SSLError``, ``grpc.RpcError``, ``yaml.YAMLError``,
``cryptography.exceptions.InvalidTag``…) are translated once, where ztid calls the
foreign library, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ztid.policy.model import Decision

__all__ = [
    "AuditError",
    "BundleError",
    "ChannelClosed",
    "ConfigError",
    "CryptoError",
    "DecryptionError",
    "FrameOrderError",
    "IdentityError",
    "KeyReleaseError",
    "KeyringError",
    "PermissionDenied",
    "PolicyError",
    "SealedFormatError",
    "SigningError",
    "SourceError",
    "SvidError",
    "TransportError",
    "TruncatedError",
    "UsageError",
    "VerificationError",
    "ZtidError",
]


class ZtidError(Exception):
    """Base class of every error ztid raises on purpose."""


class UsageError(ZtidError, ValueError):
    """A caller passed an option that can only be a mistake (never silently ignored)."""


class IdentityError(ZtidError, ValueError):
    """A SPIFFE ID or trust domain is malformed.

    Attributes:
        value: the rejected input, exactly as given.
        rule: a short name of the rule it broke (e.g. ``"scheme"``, ``"path-segment"``).
    """

    def __init__(self, message: str, *, value: Any = None, rule: str = "") -> None:
        super().__init__(message)
        self.value = value
        self.rule = rule


class BundleError(ZtidError):
    """A trust bundle cannot be read or is malformed."""


class SvidError(ZtidError):
    """An SVID is malformed, breaks a SPIFFE rule, or does not verify.

    Attributes:
        rule: a short name of the rule it broke (e.g. ``"leaf-ca"``, ``"expired"``), or ``""``.
    """

    def __init__(self, message: str, *, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule


class VerificationError(SvidError):
    """An SVID's chain, signature, validity time or trust domain check failed."""


class SourceError(ZtidError):
    """An SVID source cannot serve a current SVID and bundle set."""


class _LocatedError(ZtidError, ValueError):
    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location
        self.detail = message


class PolicyError(_LocatedError):
    """A policy file is invalid.

    Attributes:
        location: where, as ``"policy.yaml:14: components.inference.allow.registry"``.
        detail: the message without the location.
    """


class ConfigError(_LocatedError):
    """A configuration file (sidecar, agent, key service) is invalid; located like PolicyError."""


class PermissionDenied(ZtidError):
    """An enforcement point denied the request.

    Attributes:
        decision: the :class:`ztid.Decision` that denied it.
        decision_id: the decision log's id for it, when the enforcement point logged one.
    """

    decision_id: str | None = None

    def __init__(self, decision: "Decision", message: str | None = None) -> None:
        super().__init__(message or f"permission denied: {decision.reason}")
        self.decision = decision


class TransportError(ZtidError):
    """A connection could not be established, or its peer was not authorized."""


class CryptoError(ZtidError):
    """Base class of the cryptographic errors."""


class KeyringError(CryptoError):
    """Key material is unusable (bad length, unknown key id or version, unsafe file permissions)."""


class KeyReleaseError(CryptoError):
    """The key service refused to release a key, or could not be reached.

    Attributes:
        status: the gRPC status name of the refusal (``"PERMISSION_DENIED"``…), ``""`` if none.
        reason_code: the policy's stable reason code when it was a policy refusal, else ``""``.
    """

    status: str = ""
    reason_code: str = ""


class SealedFormatError(CryptoError):
    """A sealed file's container header is malformed; the message names the field."""


class DecryptionError(CryptoError):
    """Decryption failed. The message never says why, by design."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class ChannelClosed(CryptoError):
    """The channel was closed, or failed earlier (``__cause__`` is the failure); nothing more passes."""


class FrameOrderError(DecryptionError):
    """A channel frame arrived out of order: replayed, reordered, dropped, or from an unknown epoch."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"decryption failed: {detail}")


class TruncatedError(DecryptionError):
    """A channel stream ended inside a frame."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"decryption failed: {detail}")


class SigningError(ZtidError):
    """An artifact signature is missing or invalid, or its signer is not allowed."""


class AuditError(ZtidError):
    """A decision log or audit input is malformed or has been tampered with."""
