"""The default-deny policy: load policy.yaml, map SPIFFE IDs to components, decide, hot-reload.

::

    from ztid.policy import load_policy
    policy = load_policy("policy.yaml")
    decision = policy.decide("spiffe://ai-platform.example/training/job-7", "data-store", "read")
    decision.allowed, decision.code, decision.rule, decision.policy_digest
"""

from __future__ import annotations

from ztid.policy.engine import Policy
from ztid.policy.load import load_policy, parse_policy
from ztid.policy.model import DECISION_CODES, Decision, Explanation, PolicySpec, Rule

__all__ = ["DECISION_CODES", "Decision", "Explanation", "Policy", "PolicySpec", "Rule", "load_policy", "parse_policy"]
