"""Rate limiter (sliding minute, total budget) and loop detector."""

from __future__ import annotations

from typing import Any

import pytest

from policy.model import RateLimit
from policy.ratelimit import LoopDetector, RateLimiter, fingerprint

KEY = ("claude", "claude")
T0 = 1_000.0


def _run(limiter: RateLimiter, limit: RateLimit, times: list[float]) -> list[str | None]:
    """Check-then-record each call like the engine does; refused calls are not recorded."""
    results: list[str | None] = []
    for now in times:
        error = limiter.check(KEY, limit, now)
        if error is None:
            limiter.record(KEY, now)
        results.append(error)
    return results


PER_MIN = "rate limit exceeded: max_per_minute=3 for agent claude (policy claude)"
TOTAL = "rate limit exceeded: max_total=3 for agent claude (policy claude)"


@pytest.mark.parametrize(
    ("limit", "offsets", "expected"),
    [
        # exactly N in 60 s pass, the N+1th is refused
        (RateLimit(max_per_minute=3), [0, 1, 2, 3], [None, None, None, PER_MIN]),
        # still refused just before the oldest call leaves the window ...
        (RateLimit(max_per_minute=3), [0, 1, 2, 59.999], [None, None, None, PER_MIN]),
        # ... and allowed once it has (a call exactly 60 s old is outside)
        (RateLimit(max_per_minute=3), [0, 1, 2, 60], [None, None, None, None]),
        # after that, the window is (1, 61]: calls at 1, 2, 60 are inside
        (RateLimit(max_per_minute=3), [0, 1, 2, 60, 60.5], [None, None, None, None, PER_MIN]),
        (RateLimit(max_per_minute=3), [0, 1, 2, 60, 61], [None, None, None, None, None]),
        # refused calls do not count: a burst does not extend the block
        (
            RateLimit(max_per_minute=3),
            [0, 0, 0, 30, 59, 60, 60, 60, 60],
            [None, None, None, PER_MIN, PER_MIN, None, None, None, PER_MIN],
        ),
        # max_total never recovers
        (RateLimit(max_total=3), [0, 100, 200, 300, 10_000], [None, None, None, TOTAL, TOTAL]),
        # both: the total budget is named first once spent
        (
            RateLimit(max_per_minute=2, max_total=3),
            [0, 1, 2, 70, 200],
            [
                None,
                None,
                "rate limit exceeded: max_per_minute=2 for agent claude (policy claude)",
                None,
                TOTAL,
            ],
        ),
        # no limits configured
        (RateLimit(), [0, 0, 0, 0, 0], [None, None, None, None, None]),
    ],
)
def test_rate_limiter(limit: RateLimit, offsets: list[float], expected: list[str | None]) -> None:
    assert _run(RateLimiter(), limit, [T0 + o for o in offsets]) == expected


def test_rate_keys_are_separate() -> None:
    limiter = RateLimiter()
    limit = RateLimit(max_total=1)
    limiter.record(("support", "support-1"), T0)
    assert limiter.check(("support", "support-1"), limit, T0) == (
        "rate limit exceeded: max_total=1 for agent support-1 (policy support)"
    )
    assert limiter.check(("support", "support-2"), limit, T0) is None
    assert limiter.check(("other", "support-1"), limit, T0) is None


def test_rate_limiter_evicts_least_recently_used_key() -> None:
    limiter = RateLimiter(max_keys=2)
    limit = RateLimit(max_total=1)
    limiter.record(("p", "a"), T0)
    limiter.record(("p", "b"), T0)
    limiter.record(("p", "a"), T0 + 1)  # a is now the most recent
    limiter.record(("p", "c"), T0 + 2)  # evicts b
    assert len(limiter) == 2
    assert limiter.check(("p", "b"), limit, T0 + 3) is None
    assert limiter.check(("p", "a"), limit, T0 + 3) is not None


DEFAULT_LOOP = RateLimit()  # a policy that declares rate_limit: Go's 3 in 10 s
LOOP = (
    "loop detected: agent claude called fs.read with the same params more than 3 times "
    "within 10s (policy claude: loop_threshold=3, loop_window=10s)"
)
P1: dict[str, Any] = {"path": "/a", "opts": {"x": 1, "y": 2}}
P1_REORDERED: dict[str, Any] = {"opts": {"y": 2, "x": 1}, "path": "/a"}
P2: dict[str, Any] = {"path": "/b", "opts": {"x": 1, "y": 2}}


def _loops(
    detector: LoopDetector, limit: RateLimit, calls: list[tuple[float, str, dict[str, Any]]]
) -> list[str | None]:
    """Check-then-record each call like the engine does; refused calls are not recorded."""
    results: list[str | None] = []
    for offset, tool, params in calls:
        error = detector.check(KEY, tool, params, limit, T0 + offset)
        if error is None:
            detector.record(KEY, tool, params, limit, T0 + offset)
        results.append(error)
    return results


def _same(*offsets: float, params: dict[str, Any] = P1) -> list[tuple[float, str, dict[str, Any]]]:
    return [(offset, "fs.read", params) for offset in offsets]


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        # more than 3 identical calls within 10 s: the 4th is refused (Go: "> 3 in 10s")
        (_same(0, 1, 2, 3), [None, None, None, LOOP]),
        (_same(0, 1, 2), [None, None, None]),
        # key order in params does not matter
        (
            [*_same(0, 1), (2, "fs.read", P1_REORDERED), (3, "fs.read", P1)],
            [None, None, None, LOOP],
        ),
        # different params or a different tool are different calls
        ([*_same(0, 1, 2), (3, "fs.read", P2)], [None] * 4),
        ([*_same(0, 1, 2), (3, "fs.stat", P1)], [None] * 4),
        # the window: a call exactly 10 s old no longer counts
        (_same(0, 1, 2, 9.9), [None, None, None, LOOP]),
        (_same(0, 1, 2, 10), [None] * 4),
        # refused calls are not recorded: the agent recovers when old calls leave the window
        (
            _same(0, 1, 2, 3, 9, 10.5, 11, 11.5, 12.5),
            # at 10.5 only the calls at 1 and 2 are in (0.5, 10.5]; had the refused calls at
            # 3 and 9 been recorded, 10.5 would be refused too. 11.5 sees 2, 10.5 and 11.
            [None, None, None, LOOP, LOOP, None, None, LOOP, None],
        ),
    ],
)
def test_loop_detector(
    calls: list[tuple[float, str, dict[str, Any]]], expected: list[str | None]
) -> None:
    assert _loops(LoopDetector(), DEFAULT_LOOP, calls) == expected


@pytest.mark.parametrize(
    ("limit", "offsets", "expected"),
    [
        # loop_threshold 1: any repeat within the window is refused
        (RateLimit(loop_threshold=1, loop_window=5), [0, 4.9, 5], [None, "refused", None]),
        # a longer window
        (
            RateLimit.model_validate({"loop_threshold": 2, "loop_window": "1m"}),
            [0, 30, 59, 60],
            [None, None, "refused", None],
        ),
        # 0 turns loop detection off
        (RateLimit(loop_threshold=0), [0] * 20, [None] * 20),
        # rate limits alone keep Go's default loop detection
        (RateLimit(max_per_minute=100), [0, 1, 2, 3], [None, None, None, "refused"]),
    ],
)
def test_loop_detector_per_policy_settings(
    limit: RateLimit, offsets: list[float], expected: list[str | None]
) -> None:
    results = _loops(LoopDetector(), limit, _same(*offsets))
    assert [None if r is None else "refused" for r in results] == expected


def test_loop_detector_names_the_settings() -> None:
    detector = LoopDetector()
    limit = RateLimit.model_validate({"loop_threshold": 1, "loop_window": "1m30s"})
    detector.record(("bots", "bot-1"), "t", {}, limit, T0)
    assert detector.check(("bots", "bot-1"), "t", {}, limit, T0 + 1) == (
        "loop detected: agent bot-1 called t with the same params more than 1 times within 90s "
        "(policy bots: loop_threshold=1, loop_window=90s)"
    )


def test_loop_detector_is_per_policy_and_agent() -> None:
    detector = LoopDetector()
    _loops(detector, DEFAULT_LOOP, _same(0, 1, 2))
    assert detector.check(KEY, "fs.read", P1, DEFAULT_LOOP, T0 + 3) == LOOP
    assert detector.check(("claude", "gpt"), "fs.read", P1, DEFAULT_LOOP, T0 + 3) is None
    assert detector.check(("other", "claude"), "fs.read", P1, DEFAULT_LOOP, T0 + 3) is None


def test_loop_detector_off_keeps_nothing() -> None:
    detector = LoopDetector()
    _loops(detector, RateLimit(loop_threshold=0), _same(0, 1, 2, 3))
    assert len(detector) == 0


def test_loop_detector_drops_stale_keys() -> None:
    detector = LoopDetector()
    for i in range(100):
        detector.record(KEY, "t", {"i": i}, DEFAULT_LOOP, T0)
    assert len(detector) == 100
    detector.record(KEY, "t", {"i": "late"}, DEFAULT_LOOP, T0 + 10)
    assert len(detector) == 1


def test_loop_detector_caps_keys() -> None:
    detector = LoopDetector(max_keys=3)
    one = RateLimit(loop_threshold=1)
    for i in range(10):
        detector.record(KEY, "t", {"i": i}, one, T0)
    assert len(detector) == 3
    detector.record(KEY, "t", {"i": 9}, one, T0)
    assert detector.check(KEY, "t", {"i": 9}, one, T0) is not None  # the newest key survived
    assert detector.check(KEY, "t", {"i": 0}, one, T0) is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": 1, "y": [1, {"b": 2, "a": 1}]}, {"y": [1, {"a": 1, "b": 2}], "x": 1}, True),
        ({"x": [1, 2]}, {"x": [2, 1]}, False),  # list order matters
        ({"x": 1}, {"x": "1"}, False),
        ({}, {}, True),
        ({"x": object.__new__(object)}, {"x": 1}, False),  # not JSON: still no exception
    ],
)
def test_fingerprint(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    assert (fingerprint(a) == fingerprint(b)) is same
    assert len(fingerprint(a)) == 64


def test_loop_detector_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_keys must be >= 1"):
        LoopDetector(max_keys=0)
