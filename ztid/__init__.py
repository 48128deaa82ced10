"""ztid: SPIFFE identity and one default-deny policy, enforced wherever ML data moves.

Public names are listed in ``__all__`` (pinned by a test) and imported lazily, so that
``import ztid`` stays cheap for a data-loader worker that needs only one corner of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AuditError": "ztid.errors",
    "BundleError": "ztid.errors",
    "ConfigError": "ztid.errors",
    "CryptoError": "ztid.errors",
    "DecryptionError": "ztid.errors",
    "IdentityError": "ztid.errors",
    "KeyReleaseError": "ztid.errors",
    "KeyringError": "ztid.errors",
    "PermissionDenied": "ztid.errors",
    "PolicyError": "ztid.errors",
    "SealedFormatError": "ztid.errors",
    "SigningError": "ztid.errors",
    "SourceError": "ztid.errors",
    "SvidError": "ztid.errors",
    "TransportError": "ztid.errors",
    "UsageError": "ztid.errors",
    "VerificationError": "ztid.errors",
    "ZtidError": "ztid.errors",
    "SpiffeId": "ztid.spiffeid",
    "TrustDomain": "ztid.spiffeid",
    "Bundle": "ztid.bundle",
    "BundleSet": "ztid.bundle",
    "X509Svid": "ztid.svid",
    "VerifiedSvid": "ztid.svid",
    "VerifiedJwt": "ztid.svid",
    "verify_x509_svid": "ztid.svid",
    "validate_jwt_svid": "ztid.svid",
    "Identity": "ztid.identity",
    "Policy": "ztid.policy",
    "Decision": "ztid.policy",
    "load_policy": "ztid.policy",
    "parse_policy": "ztid.policy",
    "PolicyWatcher": "ztid.policy.watch",
    "current_peer": "ztid.enforce.require",
    "spiffe_id_from_leaf": "ztid.svid",
    "DevCA": "ztid.devca",
    "SvidSource": "ztid.source",
    "SvidSnapshot": "ztid.source",
    "StaticSource": "ztid.source",
    "FileSource": "ztid.source_files",
    "WorkloadApiSource": "ztid.source_workload",
    "require_signed": "ztid.signing",
    "sign_model": "ztid.signing",
    "verify_model": "ztid.signing",
    "require": "ztid.enforce.require",
    "requires": "ztid.enforce.require",
    "peer_scope": "ztid.enforce.require",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ztid' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from ztid.bundle import Bundle, BundleSet
    from ztid.enforce.require import current_peer, peer_scope, require, requires
    from ztid.errors import (
        AuditError, BundleError, ConfigError, CryptoError, DecryptionError, IdentityError, KeyReleaseError,
        KeyringError, PermissionDenied, PolicyError, SealedFormatError, SigningError, SourceError, SvidError, TransportError,
        UsageError, VerificationError, ZtidError,
    )
    from ztid.identity import Identity
    from ztid.policy import Decision, Policy, load_policy, parse_policy
    from ztid.policy.watch import PolicyWatcher
    from ztid.devca import DevCA
    from ztid.source import StaticSource, SvidSnapshot, SvidSource
    from ztid.source_files import FileSource
    from ztid.source_workload import WorkloadApiSource
    from ztid.signing import require_signed, sign_model, verify_model
    from ztid.spiffeid import SpiffeId, TrustDomain
    from ztid.svid import VerifiedJwt, VerifiedSvid, X509Svid, spiffe_id_from_leaf, validate_jwt_svid, verify_x509_svid
