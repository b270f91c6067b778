"""Go-style durations in policies and config (policy/durations.py)."""

from __future__ import annotations

import pytest

from policy.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("30m", 1800.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1m0.5s", 60.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("0", 0.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5s", "negative duration '-5s'"),
        ("-0", "negative duration"),
        ("+5s", "expected a number"),
        ("30", "missing unit after '30'"),
        ("1h30", "missing unit after '30'"),
        ("30x", "unknown unit 'x'"),
        ("5d", "unknown unit 'd'"),
        ("s", "expected a number"),
        ("abc", "expected a number"),
        ("1h 30m", "expected a number"),
        ("1..5s", "unknown unit '.5s'"),
        ("30sec", "expected a number at 'ec'"),
        ("inf", "expected a number"),
        ("1" + "0" * 400 + "h", "too large"),
    ],
)
def test_parse_duration_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(text)
    assert problem in str(info.value)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(30)  # type: ignore[arg-type]
