"""W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header):
`<version>-<trace-id>-<parent-id>-<flags>`. An agent that sends it (HTTP header, or MCP
`params._meta.traceparent`) gets the mesh's spans inside its own trace."""

from __future__ import annotations

import os
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the caller's span, the parent of the mesh's call span
    flags: str = "01"


def _hex(value: str, size: int) -> bool:
    return len(value) == size and set(value) <= _HEX and value != "0" * size


def parse(value: str | None) -> TraceParent | None:
    """The parent a `traceparent` value names; None when absent or malformed (the spec says to
    ignore a malformed one and start a new trace)."""
    if not value:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or not set(parts[0]) <= _HEX:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    trace_id, span_id, flags = parts[1], parts[2], parts[3]
    if not (_hex(trace_id, 32) and _hex(span_id, 16) and len(flags) == 2 and set(flags) <= _HEX):
        return None
    return TraceParent(trace_id, span_id, flags)


def new_span_id() -> str:
    return os.urandom(8).hex()
