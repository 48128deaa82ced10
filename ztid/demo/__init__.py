"""``ztid demo``: one story about an ML platform, told on the embedded dev trust domain.

Chapters, each a module taking the shared :class:`Story`: ``v1_identity`` (SVIDs and decisions),
``v2_wire`` (dev agents, mTLS sockets and gRPC, rotation), ``v3_mesh`` (the Envoy ext_authz
sidecar and its decision log), ``v4_sealed_data`` (keys released only to allowed SVIDs),
``v5_collectives`` (encrypted torch.distributed all_reduce), ``v6_supply_chain`` (signed models,
cluster audit). Nothing needs SPIRE, Envoy or a network beyond this machine.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ztid.policy import Policy, load_policy

__all__ = ["Story", "default_policy_path", "run"]


def default_policy_path() -> Path:
    """The shipped policy.yaml: ./policy.yaml if present, else the one beside the ztid checkout."""
    here = Path("policy.yaml")
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "policy.yaml"


@dataclass
class Story:
    """What the chapters share: a work directory, the policy and an output stream."""

    workdir: Path
    policy: Policy
    out: TextIO
    policy_path: Path = field(default_factory=default_policy_path)
    notes: dict[str, object] = field(default_factory=dict)

    def title(self, text: str) -> None:
        self.out.write(f"\n== {text} " + "=" * max(0, 74 - len(text)) + "\n")

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join("{:<%d}" % w for w in widths)
        self.out.write(line.format(*header).rstrip() + "\n")
        self.out.write(line.format(*("-" * w for w in widths)).rstrip() + "\n")
        for r in rows:
            self.out.write(line.format(*map(str, r)).rstrip() + "\n")


def run(*, policy_path: str | Path | None = None, workdir: str | Path | None = None, out: TextIO | None = None) -> int:
    """Tell the whole story; return 0 when every step behaved as the policy says.

    Raises:
        PolicyError: the policy file is broken.
    """
    from ztid.demo import v1_identity, v2_wire, v3_mesh, v4_sealed_data, v5_collectives, v6_supply_chain

    stream = out or sys.stdout
    path = Path(policy_path or default_policy_path())
    policy = load_policy(path)
    with tempfile.TemporaryDirectory(prefix="ztid-demo-") as tmp:
        story = Story(Path(workdir) if workdir else Path(tmp), policy, stream, policy_path=path)
        story.workdir.mkdir(parents=True, exist_ok=True)
        ok = True
        for chapter in (v1_identity, v2_wire, v3_mesh, v4_sealed_data, v5_collectives, v6_supply_chain):
            ok &= chapter.run(story)
    stream.write("\nDemo " + ("finished: every decision matched the policy.\n" if ok else "FAILED: see above.\n"))
    return 0 if ok else 1
