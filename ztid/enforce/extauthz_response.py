"""Envoy CheckResponses for a Decision: OK with identity headers and metadata, or a 403 that leaks only a code."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from ztid.policy import Decision

__all__ = ["ID_LENGTH", "STATIC_DENY", "ResponseTemplate", "allowed_response", "denied_response"]

ID_LENGTH: Final = 32  # new_decision_id(): 32 hex digits
_SLOT: Final = "~" * ID_LENGTH  # a placeholder id; "~" is in no SPIFFE ID, hex id or reason code


def _option(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _metadata(decision: Decision, decision_id: str) -> struct_pb2.Struct:
    src = decision.source
    fields = {
        "decision_id": decision_id, "allowed": decision.allowed, "reason_code": decision.code,
        "spiffe_id": None if src is None else str(src.spiffe_id), "component": None if src is None else src.component,
        "tenant": None if src is None else src.tenant, "rule": decision.rule,
        "would_deny": decision.would_deny, "policy_digest": decision.policy_digest or None,
    }
    meta = struct_pb2.Struct()
    meta.update({k: v for k, v in fields.items() if v is not None})
    return meta


def allowed_response(decision: Decision, decision_id: str, strip: tuple[str, ...]) -> external_auth_pb2.CheckResponse:
    """OK: x-ztid-peer/-component/-decision-id set (overwriting), ``strip`` removed, dynamic metadata."""
    src = decision.source
    ok = external_auth_pb2.OkHttpResponse(
        headers=[
            _option("x-ztid-peer", "" if src is None else str(src.spiffe_id)),
            _option("x-ztid-component", (src.component or "") if src is not None else ""),
            _option("x-ztid-decision-id", decision_id),
        ],
        headers_to_remove=strip,
    )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK), ok_response=ok, dynamic_metadata=_metadata(decision, decision_id)
    )


def denied_response(decision: Decision, decision_id: str) -> external_auth_pb2.CheckResponse:
    """PERMISSION_DENIED with a 403 and ``{decision_id, reason: <code>}``: no policy internals."""
    body = json.dumps({"decision_id": decision_id, "reason": decision.code}, sort_keys=True)
    denied = external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
        headers=[_option("content-type", "application/json"), _option("x-ztid-decision-id", decision_id)],
        body=body,
    )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=decision.code),
        denied_response=denied, dynamic_metadata=_metadata(decision, decision_id),
    )


STATIC_DENY: Final = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message="internal_error"),
    denied_response=external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
        body='{"reason": "internal_error"}',
    ),
)


class ResponseTemplate:
    """One decision's CheckResponse kept serialized, with the decision id spliced in per answer.

    ``build(decision_id)`` is serialized once with a placeholder id of the id's length; every
    answer is then the template's pieces joined by the id (one C-level join, no message objects).
    The template is used only if a probe id spliced in parses to exactly what ``build`` makes for
    it (the placeholder appears nowhere but in the id fields); otherwise each answer is built.
    """

    __slots__ = ("_build", "_parts")

    def __init__(self, build: Callable[[str], external_auth_pb2.CheckResponse]) -> None:
        self._build = build
        parts: list[bytes] | None = build(_SLOT).SerializeToString().split(_SLOT.encode())
        probe = "0" * ID_LENGTH
        if len(parts) < 2 or external_auth_pb2.CheckResponse.FromString(probe.encode().join(parts)) != build(probe):
            parts = None
        self._parts = parts

    def wire(self, decision_id: str) -> bytes:
        """The serialized CheckResponse carrying ``decision_id``."""
        if self._parts is not None and len(decision_id) == ID_LENGTH and decision_id.isascii():
            return decision_id.encode().join(self._parts)
        return self._build(decision_id).SerializeToString()
