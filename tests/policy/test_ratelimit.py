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


LOOP = (
    "loop detected: agent claude called fs.read with the same params 3 times within 10s "
    "(loop_detection threshold=3, window=10s)"
)
P1: dict[str, Any] = {"path": "/a", "opts": {"x": 1, "y": 2}}
P1_REORDERED: dict[str, Any] = {"opts": {"y": 2, "x": 1}, "path": "/a"}
P2: dict[str, Any] = {"path": "/b", "opts": {"x": 1, "y": 2}}


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        # the 3rd identical call within 10 s is refused
        ([(0, "fs.read", P1), (1, "fs.read", P1), (2, "fs.read", P1)], [None, None, LOOP]),
        # key order in params does not matter
        (
            [(0, "fs.read", P1), (1, "fs.read", P1_REORDERED), (2, "fs.read", P1)],
            [None, None, LOOP],
        ),
        # different params or a different tool are different calls
        ([(0, "fs.read", P1), (1, "fs.read", P1), (2, "fs.read", P2)], [None, None, None]),
        ([(0, "fs.read", P1), (1, "fs.read", P1), (2, "fs.stat", P1)], [None, None, None]),
        # the window: a call exactly 10 s old no longer counts
        ([(0, "fs.read", P1), (1, "fs.read", P1), (9.9, "fs.read", P1)], [None, None, LOOP]),
        ([(0, "fs.read", P1), (1, "fs.read", P1), (10, "fs.read", P1)], [None, None, None]),
        # refused calls are not recorded: the agent recovers when old calls leave the window
        (
            [
                (0, "fs.read", P1),
                (1, "fs.read", P1),
                (2, "fs.read", P1),
                (9, "fs.read", P1),
                (10.5, "fs.read", P1),
                (11, "fs.read", P1),
                (11.5, "fs.read", P1),
            ],
            # at 10.5 only the call at 1 is in (0.5, 10.5]; had the refused call at 9 been
            # recorded, 10.5 would be refused too
            [None, None, LOOP, LOOP, None, None, LOOP],
        ),
    ],
)
def test_loop_detector(
    calls: list[tuple[float, str, dict[str, Any]]], expected: list[str | None]
) -> None:
    detector = LoopDetector()
    results: list[str | None] = []
    for offset, tool, params in calls:
        error = detector.check("claude", tool, params, T0 + offset)
        if error is None:
            detector.record("claude", tool, params, T0 + offset)
        results.append(error)
    assert results == expected


def test_loop_detector_is_per_agent() -> None:
    detector = LoopDetector()
    for now in (T0, T0 + 1):
        detector.record("claude", "fs.read", P1, now)
    assert detector.check("claude", "fs.read", P1, T0 + 2) == LOOP
    assert detector.check("gpt", "fs.read", P1, T0 + 2) is None


def test_loop_detector_custom_threshold() -> None:
    detector = LoopDetector(threshold=2, window=5.0)
    detector.record("a", "t", {}, T0)
    assert detector.check("a", "t", {}, T0 + 4.9) == (
        "loop detected: agent a called t with the same params 2 times within 5s "
        "(loop_detection threshold=2, window=5s)"
    )
    assert detector.check("a", "t", {}, T0 + 5) is None


def test_loop_detector_drops_stale_keys() -> None:
    detector = LoopDetector()
    for i in range(100):
        detector.record("a", "t", {"i": i}, T0)
    assert len(detector) == 100
    detector.record("a", "t", {"i": "late"}, T0 + 10)
    assert len(detector) == 1


def test_loop_detector_caps_keys() -> None:
    detector = LoopDetector(max_keys=3)
    for i in range(10):
        detector.record("a", "t", {"i": i}, T0)
    assert len(detector) == 3
    detector.record("a", "t", {"i": 9}, T0)
    assert detector.check("a", "t", {"i": 9}, T0) is not None  # the newest key survived
    assert detector.check("a", "t", {"i": 0}, T0) is None


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1}, "threshold must be >= 2"),
        ({"window": 0.0}, "window must be > 0"),
        ({"max_keys": 0}, "max_keys >= 1"),
    ],
)
def test_loop_detector_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoopDetector(**kwargs)
