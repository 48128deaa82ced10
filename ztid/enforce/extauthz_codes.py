"""The stable reason codes of the ext_authz enforcement point, and the deny that carries one.

Besides the policy's own decision codes (``allowed``, ``denied``, ...), a Check can be denied
before a policy decision for one of these reasons; docs/extauthz-mapping.md has the table.
"""

from __future__ import annotations

from typing import Final

# Codes the policy also gives: one definition, so the sidecar's and the policy's never drift apart.
from ztid.policy.model import INTERNAL_ERROR, MALFORMED_IDENTITY, NO_PEER, NO_POLICY

__all__ = ["AUDIT_LOG_FAILED", "CALLER_NOT_ALLOWED", "Deny", "INTERNAL_ERROR", "MALFORMED_IDENTITY", "MALFORMED_REQUEST", "NO_PEER", "NO_POLICY", "NO_TARGET", "PEER_CERTIFICATE_INVALID", "PEER_CERTIFICATE_MISSING", "PEER_MISMATCH", "PEER_NOT_SPIFFE", "REASON_CODES", "XFCC_BAD_URI", "XFCC_CERTIFICATE_INVALID", "XFCC_HASH_MISMATCH", "XFCC_MALFORMED", "XFCC_MISMATCH", "XFCC_UNTRUSTED"]

PEER_NOT_SPIFFE: Final = "peer_not_spiffe"
PEER_CERTIFICATE_INVALID: Final = "peer_certificate_invalid"
PEER_CERTIFICATE_MISSING: Final = "peer_certificate_missing"
PEER_MISMATCH: Final = "peer_mismatch"
XFCC_MALFORMED: Final = "xfcc_malformed"
XFCC_UNTRUSTED: Final = "xfcc_untrusted"
XFCC_BAD_URI: Final = "xfcc_bad_uri"
XFCC_CERTIFICATE_INVALID: Final = "xfcc_certificate_invalid"
XFCC_HASH_MISMATCH: Final = "xfcc_hash_mismatch"
XFCC_MISMATCH: Final = "xfcc_mismatch"
NO_TARGET: Final = "no_target"
MALFORMED_REQUEST: Final = "malformed_request"
AUDIT_LOG_FAILED: Final = "audit_log_failed"
CALLER_NOT_ALLOWED: Final = "caller_not_allowed"
REASON_CODES: Final = frozenset({
    NO_PEER, PEER_NOT_SPIFFE, MALFORMED_IDENTITY, PEER_CERTIFICATE_INVALID, PEER_CERTIFICATE_MISSING, PEER_MISMATCH,
    XFCC_MALFORMED, XFCC_UNTRUSTED, XFCC_BAD_URI, XFCC_CERTIFICATE_INVALID, XFCC_HASH_MISMATCH, XFCC_MISMATCH,
    NO_TARGET, MALFORMED_REQUEST, NO_POLICY, AUDIT_LOG_FAILED, INTERNAL_ERROR, CALLER_NOT_ALLOWED,
})



class Deny(Exception):
    """Raised inside the mapping to end it with a deny: ``code`` (one of :data:`REASON_CODES`) and a reason.

    Never leaves :class:`ztid.enforce.extauthz.ExtAuthz`: it becomes a Decision there.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason
