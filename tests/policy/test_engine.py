"""PolicyEngine: specificity, fall-through, default deny; the static view (no limits counted).
Limits: tests/policy/test_engine_limits.py."""

from __future__ import annotations

from typing import Any

import pytest

from policy.engine import PolicyEngine
from policy.model import Condition, Decision, Policy
from tests.policy.policies import FAIL_CLOSED, NOW, make_policy, make_rule

REFUND_UNDER_100 = Condition(field="params.amount", operator="<", value=100)

# Deliberately in "wrong" order: the engine must sort by agent specificity.
POLICIES = [
    make_policy("everyone", "*", make_rule("allow", "public.*"), make_rule("deny", "*")),
    make_policy("support", "support-*", make_rule("allow", "tickets.*")),
    make_policy("support-bots", "support-bot-*", make_rule("human_approval", "tickets.close")),
    make_policy(
        "claude",
        "claude",
        make_rule("allow", "filesystem.read_*", "filesystem.list_*"),
        make_rule("allow", "payments.refund", cond=REFUND_UNDER_100),
        make_rule("human_approval", "payments.refund"),
        make_rule("human_approval", "filesystem.write_file"),
        make_rule("deny", "filesystem.move_file"),
    ),
]


@pytest.mark.parametrize(
    ("agent", "tool", "params", "action", "rule", "reason"),
    [
        # exact id beats globs and `*`
        (
            "claude",
            "filesystem.read_file",
            {},
            "allow",
            "claude",
            "filesystem.read_file matched filesystem.read_* in policy claude",
        ),
        (
            "claude",
            "filesystem.move_file",
            {},
            "deny",
            "claude",
            "filesystem.move_file matched filesystem.move_file in policy claude",
        ),
        (
            "claude",
            "filesystem.write_file",
            {},
            "human_approval",
            "claude",
            "filesystem.write_file matched filesystem.write_file in policy claude",
        ),
        # condition holds -> its rule decides; otherwise the next rule does
        (
            "claude",
            "payments.refund",
            {"amount": 50},
            "allow",
            "claude",
            (
                "payments.refund matched payments.refund in policy claude "
                "(condition params.amount < 100 holds)"
            ),
        ),
        (
            "claude",
            "payments.refund",
            {"amount": 500},
            "human_approval",
            "claude",
            "payments.refund matched payments.refund in policy claude",
        ),
        (
            "claude",
            "payments.refund",
            {"amount": "50"},
            "human_approval",
            "claude",
            "payments.refund matched payments.refund in policy claude",
        ),
        # no rule in "claude" -> fall through to `*`
        (
            "claude",
            "public.docs",
            {},
            "allow",
            "everyone",
            "public.docs matched public.* in policy everyone",
        ),
        ("claude", "shell.exec", {}, "deny", "everyone", "shell.exec matched * in policy everyone"),
        # the longer glob first, then the shorter one, then `*`
        (
            "support-bot-7",
            "tickets.close",
            {},
            "human_approval",
            "support-bots",
            "tickets.close matched tickets.close in policy support-bots",
        ),
        (
            "support-bot-7",
            "tickets.open",
            {},
            "allow",
            "support",
            "tickets.open matched tickets.* in policy support",
        ),
        (
            "support-7",
            "tickets.close",
            {},
            "allow",
            "support",
            "tickets.close matched tickets.* in policy support",
        ),
        (
            "support-bot-7",
            "mail.send",
            {},
            "deny",
            "everyone",
            "mail.send matched * in policy everyone",
        ),
        # anyone else gets only `*`
        (
            "gpt",
            "tickets.close",
            {},
            "deny",
            "everyone",
            "tickets.close matched * in policy everyone",
        ),
    ],
)
def test_evaluate(
    agent: str, tool: str, params: dict[str, Any], action: str, rule: str, reason: str
) -> None:
    decision = PolicyEngine(POLICIES).evaluate(agent, tool, params, NOW)
    assert decision == Decision(action=action, rule=rule, reason=reason)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policies", "agent", "tool"),
    [
        ([], "claude", "fs.read"),
        ([make_policy("claude", "claude", make_rule("allow", "fs.*"))], "gpt", "fs.read"),
        ([make_policy("claude", "claude", make_rule("allow", "fs.*"))], "claude", "net.get"),
        ([make_policy("claude", "claude")], "claude", "fs.read"),  # a policy without rules
        # conditional rule whose condition fails, nothing after it
        (
            [make_policy("c", "claude", make_rule("allow", "fs.read", cond=REFUND_UNDER_100))],
            "claude",
            "fs.read",
        ),
        # the agent pattern is a glob on the whole id, `.` literal
        ([make_policy("p", "a.b", make_rule("allow", "*"))], "aXb", "fs.read"),
        ([make_policy("p", "bot-*", make_rule("allow", "*"))], "my-bot-1", "fs.read"),
    ],
)
def test_default_deny(policies: list[Policy], agent: str, tool: str) -> None:
    assert PolicyEngine(policies).evaluate(agent, tool, {}, NOW) == FAIL_CLOSED


@pytest.mark.parametrize(
    ("policies", "agent", "expected_rule"),
    [
        # equal specificity: config order wins
        (
            [
                make_policy("first", "ab-*", make_rule("allow", "*")),
                make_policy("second", "*-cd", make_rule("deny", "*")),
            ],
            "ab-cd",
            "first",
        ),
        (
            [
                make_policy("second", "*-cd", make_rule("deny", "*")),
                make_policy("first", "ab-*", make_rule("allow", "*")),
            ],
            "ab-cd",
            "second",
        ),
        # two policies for the same exact id: the first in config order
        (
            [
                make_policy("one", "claude", make_rule("allow", "*")),
                make_policy("two", "claude", make_rule("deny", "*")),
            ],
            "claude",
            "one",
        ),
        # `*` is always last, even when listed first
        (
            [
                make_policy("all", "*", make_rule("deny", "*")),
                make_policy("pre", "c*", make_rule("allow", "*")),
            ],
            "claude",
            "pre",
        ),
    ],
)
def test_specificity_ties(policies: list[Policy], agent: str, expected_rule: str) -> None:
    engine = PolicyEngine(policies)
    assert engine.evaluate(agent, "fs.read", {}, NOW).rule == expected_rule
    selected = engine.select_policy(agent)
    assert selected is not None and selected.name == expected_rule


def test_select_policy() -> None:
    engine = PolicyEngine(POLICIES)
    assert [p.name for p in engine.policies] == ["claude", "support-bots", "support", "everyone"]
    assert [p.name for p in engine.matching_policies("support-bot-1")] == [
        "support-bots",
        "support",
        "everyone",
    ]
    assert PolicyEngine([]).select_policy("claude") is None
    assert PolicyEngine(POLICIES[1:3]).select_policy("gpt") is None


@pytest.mark.parametrize(
    ("agent", "tool", "expected"),
    [
        (
            "claude",
            "payments.refund",
            Decision(
                action="allow",
                rule="claude",
                reason="payments.refund matched payments.refund in policy claude "
                "(conditional: only when params.amount < 100)",
            ),
        ),
        (
            "claude",
            "filesystem.list_directory",
            Decision(
                action="allow",
                rule="claude",
                reason="filesystem.list_directory matched filesystem.list_* in policy claude",
            ),
        ),
        (
            "support-bot-1",
            "tickets.open",
            Decision(
                action="allow",
                rule="support",
                reason="tickets.open matched tickets.* in policy support",
            ),
        ),
        (
            "gpt",
            "x.y",
            Decision(action="deny", rule="everyone", reason="x.y matched * in policy everyone"),
        ),
    ],
)
def test_evaluate_static(agent: str, tool: str, expected: Decision) -> None:
    assert PolicyEngine(POLICIES).evaluate_static(agent, tool) == expected
