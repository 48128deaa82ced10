"""Fixtures for the decision log, the XFCC parser and the ext_authz mapping: CAs minted at run time."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea

from ztid.policy import Policy, load_policy, parse_policy
from ztid.testing import TestCA, bundle_set

TD = "ai-platform.example"
POLICY_PATH = Path(__file__).resolve().parents[2] / "policy.yaml"


def sid(path: str, td: str = TD) -> str:
    return f"spiffe://{td}{path}"


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create(TD, intermediate=True)


@pytest.fixture(scope="session")
def partner() -> TestCA:
    return TestCA.create("partner.example")


@pytest.fixture(scope="session")
def bundles(ca: TestCA) -> Any:
    return bundle_set(ca)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(POLICY_PATH)


@pytest.fixture(scope="session")
def audit_policy() -> Policy:
    text = POLICY_PATH.read_text().replace("\nmode: enforce", "\nmode: audit")
    assert "mode: audit" in text
    return parse_policy(text, name="policy-audit.yaml")


@pytest.fixture(scope="session")
def signer(ca: TestCA) -> Any:
    return ca.issue(sid("/ztid/sidecar"))


def envoy_certificate(pem: bytes) -> str:
    """``source.certificate`` as Envoy fills it with include_peer_certificate: the URL-encoded PEM."""
    return urllib.parse.quote(pem.decode("ascii"))


def build_check_request(
    *,
    principal: str = "",
    certificate: bytes | None = None,
    destination: str = "",
    method: str = "GET",
    path: str = "/",
    host: str = "svc.local",
    headers: Mapping[str, str] | None = None,
    context_extensions: Mapping[str, str] | None = None,
) -> ea.CheckRequest:
    """A CheckRequest shaped exactly as Envoy's ext_authz filter builds it for an HTTP request."""
    http_headers = {":authority": host, ":method": method, ":path": path, **(headers or {})}
    return ea.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(
                principal=principal, certificate="" if certificate is None else envoy_certificate(certificate),
            ),
            destination=ac.AttributeContext.Peer(principal=destination),
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(
                    id="1234", method=method, path=path, host=host, scheme="https", protocol="HTTP/2",
                    headers=http_headers,
                )
            ),
            context_extensions=dict(context_extensions or {}),
        )
    )


@pytest.fixture
def make_request() -> Callable[..., ea.CheckRequest]:
    return build_check_request
