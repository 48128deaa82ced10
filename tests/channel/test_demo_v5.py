"""Demo chapter 5 runs end to end: encrypted all_reduce steps between training ranks, the inference rank refused."""

from __future__ import annotations

import io

import pytest

from ztid.demo import Story, default_policy_path
from ztid.policy import load_policy

pytest.importorskip("torch")
pytestmark = [pytest.mark.timeout(90), pytest.mark.torch]


def test_v5_collectives_story(tmp_path) -> None:
    from ztid.demo import v5_collectives

    out = io.StringIO()
    ok = v5_collectives.run(Story(tmp_path, load_policy(default_policy_path()), out))
    text = out.getvalue()
    assert ok, text
    assert "weights identical on both ranks after 4 steps: yes" in text
    assert "spiffe://ai-platform.example/ns/vision/sa/inference: refused: PermissionDenied" in text
    assert "bug!" not in text
    assert "dev agents (`ztid agent`, the Workload API)" in text
