"""Demo chapter 6 tells its story and every outcome is the expected one."""

from __future__ import annotations

import io

from ztid.demo import Story
from ztid.demo import v6_supply_chain


def test_chapter_6_runs(tmp_path, policy):
    out = io.StringIO()
    assert v6_supply_chain.run(Story(tmp_path, policy, out)) is True
    text = out.getvalue()
    assert "signed by training    ACCEPT" in text
    for line in ("signed by inference   refuse", "tampered copy         refuse", "forged training SVID  refuse",
                 "unsigned copy         refuse"):
        assert line in text
    assert "resnet18                   loaded" in text
    assert "resnet18-tampered          REFUSED" in text and "resnet18-inference-signed  REFUSED" in text
    assert "does not chain to the trust bundle of 'ai-platform.example'" in text
    assert "ZT-K8S-005" in text and "0 finding(s) (clean); fail-on high: ok" in text
    assert (tmp_path / "ca" / "bundle.pem").is_file()
