"""The decision for one tool call (compat.md §2): limits, then policies.

Pure: no I/O, no clock; the caller passes `now` (seconds on a monotonic clock, for the limits).

Order of evaluation in `PolicyEngine.evaluate`:
1. The `rate_limit` of the *selected* policy (the most specific one whose agent pattern
   matches): max_total, then max_per_minute, then loop detection (more than loop_threshold
   identical calls within loop_window). Either refuses with action "rate_limited" and rule
   "rate_limit" / "loop_detection". A selected policy without `rate_limit` has no limits at
   all, loop detection included (as in the Go project).
2. Every call that gets past step 1 is counted (rate limiter and loop detector), whatever the
   rules then decide: a denied call still costs budget, so an agent hammering a denied tool
   is throttled too. Refused calls (step 1) are not counted, so agents recover.
3. Matching policies are tried from the most specific agent pattern to the least (exact id,
   globs with more literal characters first, then `*`; ties keep config order). Within a
   policy the first rule whose tool glob matches and whose condition holds decides. If no
   rule of a policy decides, the next less specific matching policy is tried.
4. Nothing decided -> deny, rule "default" (fail closed).

Grants are not the engine's: a `human_approval` decision goes to the approval service, which
turns it into `allow` when a live grant of the agent covers the tool (workers/approval.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policy.conditions import condition_holds, describe
from policy.globs import agent_specificity, glob_matches
from policy.model import Decision, Policy, Rule
from policy.ratelimit import LoopDetector, RateLimiter

DEFAULT_DENY = Decision(action="deny", rule="default", reason="no matching policy — fail closed")


def _matched_glob(rule: Rule, tool: str) -> str | None:
    return next((pattern for pattern in rule.tools if glob_matches(pattern, tool)), None)


class PolicyEngine:
    """Evaluates calls against policies; owns the per-agent counters. Not thread-safe."""

    def __init__(
        self,
        policies: Sequence[Policy],
        *,
        rate_limiter: RateLimiter | None = None,
        loop_detector: LoopDetector | None = None,
    ) -> None:
        # sorted() is stable: equal specificity keeps config order.
        self.policies: tuple[Policy, ...] = tuple(
            sorted(policies, key=lambda p: agent_specificity(p.agent))
        )
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.loop_detector = loop_detector if loop_detector is not None else LoopDetector()

    def matching_policies(self, agent: str) -> list[Policy]:
        """Policies whose agent pattern matches, most specific first."""
        return [p for p in self.policies if glob_matches(p.agent, agent)]

    def select_policy(self, agent: str) -> Policy | None:
        """The most specific matching policy: the one whose rate limit applies to `agent`."""
        return next((p for p in self.policies if glob_matches(p.agent, agent)), None)

    def evaluate(
        self,
        agent: str,
        tool: str,
        params: Mapping[str, Any],
        now: float,
    ) -> Decision:
        """Decide one call (see the module docstring for the order) and count it."""
        selected = self.select_policy(agent)
        limit = selected.rate_limit if selected is not None else None
        if selected is not None and limit is not None:
            key = (selected.name, agent)
            error = self.rate_limiter.check(key, limit, now)
            if error is not None:
                return Decision(action="rate_limited", rule="rate_limit", reason=error)
            error = self.loop_detector.check(key, tool, params, limit, now)
            if error is not None:
                return Decision(action="rate_limited", rule="loop_detection", reason=error)
            # Only policies with a limit are counted: nothing else reads the counters.
            self.rate_limiter.record(key, now)
            self.loop_detector.record(key, tool, params, limit, now)

        return self._first_rule(agent, tool, params)

    def _first_rule(self, agent: str, tool: str, params: Mapping[str, Any]) -> Decision:
        call: dict[str, Any] = {"params": params, "tool": tool, "agent": agent}
        for policy in self.matching_policies(agent):
            for rule in policy.rules:
                pattern = _matched_glob(rule, tool)
                if pattern is None:
                    continue
                cond = rule.condition
                if cond is not None and not condition_holds(cond, call):
                    continue
                reason = f"{tool} matched {pattern} in policy {policy.name}"
                if cond is not None:
                    reason += f" (condition {describe(cond)} holds)"
                return Decision(action=rule.action, rule=policy.name, reason=reason)
        return DEFAULT_DENY

    def evaluate_static(self, agent: str, tool: str) -> Decision:
        """What the policies say about `tool` for `agent` without params, for catalog views.

        No counting, no limits. A rule with a condition counts as matching (its
        outcome depends on params) and the reason says "conditional"; the first rule whose
        glob matches decides, falling through policies as in `evaluate`.
        """
        for policy in self.matching_policies(agent):
            for rule in policy.rules:
                pattern = _matched_glob(rule, tool)
                if pattern is None:
                    continue
                reason = f"{tool} matched {pattern} in policy {policy.name}"
                cond = rule.condition
                if cond is not None:
                    reason += f" (conditional: only when {describe(cond)})"
                return Decision(action=rule.action, rule=policy.name, reason=reason)
        return DEFAULT_DENY
