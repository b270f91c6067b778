"""Pure policy logic: models, globs, conditions, rate limits, the decision engine. No I/O."""

from policy.conditions import condition_holds
from policy.engine import DEFAULT_DENY, PolicyEngine
from policy.globs import agent_specificity, glob_matches
from policy.model import Condition, Decision, Policy, RateLimit, Rule
from policy.ratelimit import LoopDetector, RateLimiter, fingerprint

__all__ = [
    "DEFAULT_DENY",
    "Condition",
    "Decision",
    "LoopDetector",
    "Policy",
    "PolicyEngine",
    "RateLimit",
    "RateLimiter",
    "Rule",
    "agent_specificity",
    "condition_holds",
    "fingerprint",
    "glob_matches",
]
