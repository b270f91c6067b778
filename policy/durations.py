"""Go-style durations ("30s", "5m", "1h30m", "500ms", "1.5h"), as written in Go agent-mesh configs.

Used by the config loader (`cli_tools[].commands[].timeout`) and for grant durations.
"""

from __future__ import annotations

import math
import re

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign, as Go accepts
    "μs": 1e-6,  # U+03BC greek mu, as Go accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
# Longest units first, so "ms" is not read as "m" followed by garbage.
_UNIT = re.compile("|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)))


MAX_SECONDS = (2**63 - 1) / 1e9  # Go's time.Duration: int64 nanoseconds, about 292 years


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds.

    Accepts a sequence of `<number><unit>` parts (units ns, us/µs, ms, s, m, h; decimals allowed),
    and the bare "0" that Go accepts. Rejects empty strings, signs (no negative durations),
    missing or unknown units and anything else. Raises ValueError with a readable message.
    """
    if not isinstance(text, str):  # callers pass user input and catch ValueError
        message = f"duration must be a string such as '30s' or '1h30m', got {text!r}"
        raise ValueError(message)  # noqa: TRY004
    s = text.strip()
    if not s:
        raise ValueError("empty duration (expected e.g. '30s', '5m', '1h30m')")
    if s.startswith("-"):
        raise ValueError(f"negative duration {text!r} is not allowed")
    if s == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(s):
        number = _NUMBER.match(s, pos)
        if number is None:
            raise ValueError(f"invalid duration {text!r}: expected a number at {s[pos:]!r}")
        unit = _UNIT.match(s, number.end())
        if unit is None:
            rest = s[number.end() :]
            what = f"unknown unit {rest!r}" if rest else "missing unit"
            raise ValueError(
                f"invalid duration {text!r}: {what} after {number.group()!r} "
                "(use ns, us, ms, s, m or h)"
            )
        total += float(number.group()) * _UNITS[unit.group()]
        pos = unit.end()
    if not math.isfinite(total) or total > MAX_SECONDS:
        raise ValueError(f"invalid duration {text!r}: too large (at most 2562047h, as in Go)")
    return total


def format_duration(seconds: float) -> str:
    """Whole seconds as Go's `time.Duration.String()` prints them: "0s", "45s", "4m32s", "1h0m0s".

    Go's API shows remaining times truncated to the second (`.Truncate(time.Second).String()`);
    this is that, for non-negative durations."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
