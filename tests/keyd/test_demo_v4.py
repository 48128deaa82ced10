"""Demo chapter 4 tells its story end to end (real key service, DataLoader workers, revocation)."""

from __future__ import annotations

import io

import pytest

from ztid.demo import Story, default_policy_path
from ztid.demo import v4_sealed_data
from ztid.policy import load_policy

pytest.importorskip("torch")


def test_v4_story(tmp_path):
    out = io.StringIO()
    assert v4_sealed_data.run(Story(tmp_path, load_policy(default_policy_path()), out)) is True
    text = out.getvalue()
    assert "2 DataLoader worker process(es)" in text
    assert "refused: explicit_deny" in text and "inference is explicitly denied access to data-store" in text
    assert "refused: tenant_mismatch" in text
    assert "renewal was refused" in text and "no_matching_rule" in text
