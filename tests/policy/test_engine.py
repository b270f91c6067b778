"""PolicyEngine: specificity, fall-through, default deny, limits before rules."""

from __future__ import annotations

from typing import Any

import pytest

from policy.engine import PolicyEngine
from policy.model import Condition, Decision, Policy, RateLimit, Rule

NOW = 1_000.0
FAIL_CLOSED = Decision(action="deny", rule="default", reason="no matching policy — fail closed")


def _policy(name: str, agent: str, *rules: Rule, limit: RateLimit | None = None) -> Policy:
    return Policy(name=name, agent=agent, rules=list(rules), rate_limit=limit)


def _rule(action: str, *tools: str, cond: Condition | None = None) -> Rule:
    return Rule(tools=list(tools), action=action, condition=cond)  # type: ignore[arg-type]


REFUND_UNDER_100 = Condition(field="params.amount", operator="<", value=100)

# Deliberately in "wrong" order: the engine must sort by agent specificity.
POLICIES = [
    _policy("everyone", "*", _rule("allow", "public.*"), _rule("deny", "*")),
    _policy("support", "support-*", _rule("allow", "tickets.*")),
    _policy("support-bots", "support-bot-*", _rule("human_approval", "tickets.close")),
    _policy(
        "claude",
        "claude",
        _rule("allow", "filesystem.read_*", "filesystem.list_*"),
        _rule("allow", "payments.refund", cond=REFUND_UNDER_100),
        _rule("human_approval", "payments.refund"),
        _rule("human_approval", "filesystem.write_file"),
        _rule("deny", "filesystem.move_file"),
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
        ([_policy("claude", "claude", _rule("allow", "fs.*"))], "gpt", "fs.read"),
        ([_policy("claude", "claude", _rule("allow", "fs.*"))], "claude", "net.get"),
        ([_policy("claude", "claude")], "claude", "fs.read"),  # a policy without rules
        # conditional rule whose condition fails, nothing after it
        (
            [_policy("c", "claude", _rule("allow", "fs.read", cond=REFUND_UNDER_100))],
            "claude",
            "fs.read",
        ),
        # the agent pattern is a glob on the whole id, `.` literal
        ([_policy("p", "a.b", _rule("allow", "*"))], "aXb", "fs.read"),
        ([_policy("p", "bot-*", _rule("allow", "*"))], "my-bot-1", "fs.read"),
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
                _policy("first", "ab-*", _rule("allow", "*")),
                _policy("second", "*-cd", _rule("deny", "*")),
            ],
            "ab-cd",
            "first",
        ),
        (
            [
                _policy("second", "*-cd", _rule("deny", "*")),
                _policy("first", "ab-*", _rule("allow", "*")),
            ],
            "ab-cd",
            "second",
        ),
        # two policies for the same exact id: the first in config order
        (
            [
                _policy("one", "claude", _rule("allow", "*")),
                _policy("two", "claude", _rule("deny", "*")),
            ],
            "claude",
            "one",
        ),
        # `*` is always last, even when listed first
        (
            [_policy("all", "*", _rule("deny", "*")), _policy("pre", "c*", _rule("allow", "*"))],
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


UNLIMITED = [_policy("everyone", "*", _rule("allow", "*"))]
LIMITED = [
    _policy(
        "support",
        "support-*",
        _rule("allow", "tickets.*"),
        _rule("deny", "*"),
        limit=RateLimit(max_per_minute=2, max_total=3),
    ),
    _policy("everyone", "*", _rule("allow", "*"), limit=RateLimit(max_total=100)),
]


def _calls(
    engine: PolicyEngine, calls: list[tuple[float, str, str, dict[str, Any]]]
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for offset, agent, tool, params in calls:
        decision = engine.evaluate(agent, tool, params, NOW + offset)
        out.append((decision.action, decision.rule))
    return out


ALLOW = ("allow", "support")
DENY = ("deny", "support")
RATE = ("rate_limited", "rate_limit")
LOOPED = ("rate_limited", "loop_detection")


@pytest.mark.parametrize(
    ("policies", "calls", "expected"),
    [
        # per agent under a glob policy: support-1 and support-2 have their own windows
        (
            LIMITED,
            [
                (0, "support-1", "tickets.a", {}),
                (1, "support-1", "tickets.b", {}),
                (2, "support-1", "tickets.c", {}),
                (3, "support-2", "tickets.c", {}),
                (4, "support-2", "tickets.d", {}),
                (5, "support-2", "tickets.e", {}),
            ],
            [ALLOW, ALLOW, RATE, ALLOW, ALLOW, RATE],
        ),
        # denied calls are counted too; refused ones are not; max_total stays spent
        (
            LIMITED,
            [
                (0, "support-1", "mail.send", {}),
                (1, "support-1", "mail.send", {"n": 2}),
                (2, "support-1", "tickets.a", {}),
                (61, "support-1", "tickets.a", {}),
                (200, "support-1", "tickets.b", {}),
            ],
            [DENY, DENY, RATE, ALLOW, RATE],
        ),
        # limits are checked before the rules: an allowed tool is still refused
        (
            LIMITED,
            [
                (0, "support-1", "tickets.a", {}),
                (0, "support-1", "tickets.a", {"n": 2}),
                (0, "support-1", "tickets.a", {"n": 3}),
            ],
            [ALLOW, ALLOW, RATE],
        ),
        # loop detection (the selected policy declares rate_limit): the 4th identical call in
        # 10 s, key order irrelevant; per agent; recovers
        (
            LIMITED,
            [
                (0, "gpt", "fs.read", {"p": "/a", "q": 1}),
                (1, "gpt", "fs.read", {"q": 1, "p": "/a"}),
                (2, "gpt", "fs.read", {"p": "/a", "q": 1}),
                (2, "gpt", "fs.read", {"p": "/a", "q": 1}),
                (3, "gpt", "fs.read", {"p": "/b", "q": 1}),
                (3, "claude", "fs.read", {"p": "/a", "q": 1}),
                (10.5, "gpt", "fs.read", {"p": "/a", "q": 1}),
            ],
            [("allow", "everyone")] * 3 + [LOOPED] + [("allow", "everyone")] * 3,
        ),
        # no rate_limit on the selected policy: no loop detection (Go), however often
        (
            UNLIMITED,
            [(0, "poller", "fs.read", {"p": "/a"})] * 20,
            [("allow", "everyone")] * 20,
        ),
        # ... and none without any matching policy either
        (
            [],
            [(0, "x", "t", {})] * 5,
            [("deny", "default")] * 5,
        ),
        # the selected (most specific) policy's settings apply, not a broader one's
        (
            [
                _policy(
                    "pollers", "poll-*", _rule("allow", "*"), limit=RateLimit(loop_threshold=0)
                ),
                *LIMITED,
            ],
            [(0, "poll-1", "fs.read", {})] * 6,
            [("allow", "pollers")] * 6,
        ),
        (
            [
                _policy(
                    "strict",
                    "*",
                    _rule("allow", "*"),
                    limit=RateLimit(loop_threshold=1, loop_window=2),
                )
            ],
            [(0, "a", "t", {}), (1, "a", "t", {}), (2, "a", "t", {}), (2, "a", "t", {})],
            [("allow", "strict"), LOOPED, ("allow", "strict"), LOOPED],
        ),
    ],
)
def test_limits(
    policies: list[Policy],
    calls: list[tuple[float, str, str, dict[str, Any]]],
    expected: list[tuple[str, str]],
) -> None:
    assert _calls(PolicyEngine(policies), calls) == expected


def test_limit_reasons() -> None:
    engine = PolicyEngine(LIMITED)
    for i in range(2):
        engine.evaluate("support-1", "tickets.a", {"i": i}, NOW)
    assert engine.evaluate("support-1", "tickets.a", {"i": 9}, NOW) == Decision(
        action="rate_limited",
        rule="rate_limit",
        reason="rate limit exceeded: max_per_minute=2 for agent support-1 (policy support)",
    )
    assert engine.evaluate("support-1", "tickets.a", {"i": 9}, NOW + 60) == Decision(
        action="allow", rule="support", reason="tickets.a matched tickets.* in policy support"
    )
    assert engine.evaluate("support-1", "tickets.a", {"i": 10}, NOW + 120).reason == (
        "rate limit exceeded: max_total=3 for agent support-1 (policy support)"
    )
    for _ in range(3):
        engine.evaluate("gpt", "t", {}, NOW)
    assert engine.evaluate("gpt", "t", {}, NOW).reason == (
        "loop detected: agent gpt called t with the same params more than 3 times within 10s "
        "(policy everyone: loop_threshold=3, loop_window=10s)"
    )


def test_only_the_selected_policy_limit_applies() -> None:
    # support-1 falls through to "everyone" for mail.x, but support's limit still applies,
    # and everyone's (lower) limit does not.
    policies = [
        _policy("support", "support-*", _rule("allow", "tickets.*"), limit=RateLimit(max_total=3)),
        _policy("everyone", "*", _rule("allow", "*"), limit=RateLimit(max_total=1)),
    ]
    engine = PolicyEngine(policies)
    results = [engine.evaluate("support-1", "mail.x", {"i": i}, NOW) for i in range(4)]
    assert [(d.action, d.rule) for d in results] == [("allow", "everyone")] * 3 + [RATE]


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


def test_evaluate_static_counts_nothing() -> None:
    engine = PolicyEngine(LIMITED)
    for _ in range(10):
        assert engine.evaluate_static("support-1", "tickets.a").action == "allow"
    assert engine.evaluate("support-1", "tickets.a", {}, NOW).action == "allow"
    assert PolicyEngine([]).evaluate_static("claude", "fs.read") == FAIL_CLOSED
