"""W3C traceparent parsing (gateway/call.py): what becomes the parent, what is ignored."""

from __future__ import annotations

import pytest

from gateway.call import TraceParent
from gateway.call import parse_traceparent as parse

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", TraceParent(TRACE, SPAN, "01")),
        (
            f"00-{TRACE.upper()}-{SPAN}-00",
            TraceParent(TRACE, SPAN, "00"),
        ),  # not sampled: kept, flags say so
        (
            f"01-{TRACE}-{SPAN}-01-future",
            TraceParent(TRACE, SPAN, "01"),
        ),  # a later version may add fields
        (f"00-{TRACE}-{SPAN}-01-extra", None),  # version 00 has exactly four
        (f"ff-{TRACE}-{SPAN}-01", None),  # forbidden version
        (f"00-{'0' * 32}-{SPAN}-01", None),  # all-zero ids are invalid
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        (f"00-{TRACE}-{SPAN}-0x", None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_parse(value: str | None, expected: TraceParent | None) -> None:
    assert parse(value) == expected
