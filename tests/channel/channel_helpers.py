"""Helpers for tests/channel (imported by conftest and the tests): a run-time PKI, simulated handshakes."""

from __future__ import annotations

import os
from pathlib import Path

from ztid.crypto.session import derive_session
from ztid.source import StaticSource
from ztid.spiffeid import SpiffeId
from ztid.testing import TestCA, bundle_set

ROOT = Path(__file__).resolve().parents[2]
TD = "ai-platform.example"
FOREIGN = "partner.example"


class Pki:
    """Our trust domain (with an intermediate) and a foreign one the shipped policy does not federate."""

    def __init__(self) -> None:
        self.ca = TestCA.create(TD, intermediate=True)
        self.partner = TestCA.create(FOREIGN)
        self.bundles = bundle_set(self.ca)
        self.both = bundle_set(self.ca, self.partner)

    def source(self, path: str, *, foreign: bool = False, trust_both: bool = False) -> StaticSource:
        ca = self.partner if foreign else self.ca
        td = FOREIGN if foreign else TD
        return StaticSource(ca.issue(f"spiffe://{td}{path}"), self.both if (trust_both or foreign) else self.bundles)


def key_pair(*, channel_id: bytes | None = None, context: bytes = b""):
    """Both sides' SessionKeys from one simulated handshake (fresh secrets)."""
    a = SpiffeId.parse(f"spiffe://{TD}/ns/vision/sa/training")
    b = SpiffeId.parse(f"spiffe://{TD}/training/rank-1")
    si, sr, cid = os.urandom(32), os.urandom(32), channel_id or os.urandom(16)
    common = dict(initiator_secret=si, responder_secret=sr, initiator_id=a, responder_id=b, channel_id=cid, context=context)
    return derive_session(initiator=True, **common)[0], derive_session(initiator=False, **common)[0]
