"""Policies for the engine tests, built short."""

from __future__ import annotations

from policy.model import Condition, Decision, Policy, RateLimit, Rule

NOW = 1_000.0
FAIL_CLOSED = Decision(action="deny", rule="default", reason="no matching policy — fail closed")


def make_policy(name: str, agent: str, *rules: Rule, limit: RateLimit | None = None) -> Policy:
    return Policy(name=name, agent=agent, rules=list(rules), rate_limit=limit)


def make_rule(action: str, *tools: str, cond: Condition | None = None) -> Rule:
    return Rule(tools=list(tools), action=action, condition=cond)  # type: ignore[arg-type]
