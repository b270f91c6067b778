"""PolicyEngine limits: rate limits and loop detection, checked before the rules, per agent, and
only the selected policy's."""

from __future__ import annotations

from typing import Any

import pytest

from policy.engine import PolicyEngine
from policy.model import Decision, Policy, RateLimit
from tests.policy.policies import FAIL_CLOSED, NOW, make_policy, make_rule

UNLIMITED = [make_policy("everyone", "*", make_rule("allow", "*"))]
LIMITED = [
    make_policy(
        "support",
        "support-*",
        make_rule("allow", "tickets.*"),
        make_rule("deny", "*"),
        limit=RateLimit(max_per_minute=2, max_total=3),
    ),
    make_policy("everyone", "*", make_rule("allow", "*"), limit=RateLimit(max_total=100)),
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
                make_policy(
                    "pollers", "poll-*", make_rule("allow", "*"), limit=RateLimit(loop_threshold=0)
                ),
                *LIMITED,
            ],
            [(0, "poll-1", "fs.read", {})] * 6,
            [("allow", "pollers")] * 6,
        ),
        (
            [
                make_policy(
                    "strict",
                    "*",
                    make_rule("allow", "*"),
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
        make_policy(
            "support", "support-*", make_rule("allow", "tickets.*"), limit=RateLimit(max_total=3)
        ),
        make_policy("everyone", "*", make_rule("allow", "*"), limit=RateLimit(max_total=1)),
    ]
    engine = PolicyEngine(policies)
    results = [engine.evaluate("support-1", "mail.x", {"i": i}, NOW) for i in range(4)]
    assert [(d.action, d.rule) for d in results] == [("allow", "everyone")] * 3 + [RATE]


def test_evaluate_static_counts_nothing() -> None:
    engine = PolicyEngine(LIMITED)
    for _ in range(10):
        assert engine.evaluate_static("support-1", "tickets.a").action == "allow"
    assert engine.evaluate("support-1", "tickets.a", {}, NOW).action == "allow"
    assert PolicyEngine([]).evaluate_static("claude", "fs.read") == FAIL_CLOSED
