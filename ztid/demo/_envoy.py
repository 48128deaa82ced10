"""Envoy-shaped ext_authz CheckRequests for the demo (as Envoy's filter builds them)."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea

from ztid.enforce.xfcc import XfccElement, format_xfcc


def check_request(*, principal: str = "", certificate: bytes | None = None, method: str = "GET", path: str = "/",
                  headers: Mapping[str, str] | None = None, target: str = "", action: str = "") -> ea.CheckRequest:
    """A CheckRequest with the peer as Envoy reports it: principal and URL-encoded PEM certificate."""
    ext = {k: v for k, v in (("ztid.target", target), ("ztid.action", action)) if v}
    return ea.CheckRequest(attributes=ac.AttributeContext(
        source=ac.AttributeContext.Peer(
            principal=principal,
            certificate="" if certificate is None else urllib.parse.quote(certificate.decode("ascii"))),
        request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(
            id="demo", method=method, path=path, host="registry", scheme="https", protocol="HTTP/2",
            headers={":method": method, ":path": path, ":authority": "registry", **(headers or {})})),
        context_extensions=ext,
    ))


def xfcc_for(svid: object, *, by: str, uri: str) -> str:
    """An x-forwarded-client-cert value as an upstream proxy would add it."""
    leaf = svid.leaf  # type: ignore[attr-defined]
    der = leaf.public_bytes(serialization.Encoding.DER)
    return format_xfcc([XfccElement(by=(by,), hash=hashlib.sha256(der).hexdigest(),
                                    chain=svid.chain_pem().decode(), uri=(uri,))])  # type: ignore[attr-defined]
