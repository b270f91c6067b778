"""Wire constants of the AMB/1 bus protocol (see bus/PROTOCOL.md). Leaf module: no project
imports."""

from __future__ import annotations

from typing import Any, Final

import msgpack

PROTOCOL: Final = b"AMB1"

# Commands (frame 1).
REQUEST: Final = b"\x01"
CANCEL: Final = b"\x02"
PARTIAL: Final = b"\x03"
REPLY: Final = b"\x04"
ERROR: Final = b"\x05"
ANSWER: Final = b"\x06"
FORWARD: Final = b"\x07"
EVENT: Final = b"\x08"
READY: Final = b"\x10"
HEARTBEAT: Final = b"\x11"
DISCONNECT: Final = b"\x12"
UPDATE: Final = b"\x13"

COMMAND_NAMES: Final = {
    REQUEST: "REQUEST",
    CANCEL: "CANCEL",
    PARTIAL: "PARTIAL",
    REPLY: "REPLY",
    ERROR: "ERROR",
    ANSWER: "ANSWER",
    FORWARD: "FORWARD",
    EVENT: "EVENT",
    READY: "READY",
    HEARTBEAT: "HEARTBEAT",
    DISCONNECT: "DISCONNECT",
    UPDATE: "UPDATE",
}

# Error codes (HTTP-like; what each one answers HTTP and MCP callers: bus/errors.py, ERRORS).
BAD_REQUEST: Final = 400
FORBIDDEN: Final = 403
NOT_FOUND: Final = 404
CONFLICT: Final = 409  # the target's state forbids the request (an approval already resolved)
CANCELLED: Final = 499
INTERNAL: Final = 500
WORKER_DIED: Final = 502
UNAVAILABLE: Final = 503
TIMEOUT: Final = 504
UPSTREAM_ERROR: Final = 520  # the upstream MCP server answered with a JSON-RPC error of its own
UPSTREAM_GONE: Final = (
    521  # the upstream MCP server exited / its connection dropped during the request
)

# Liveness: any message counts as a heartbeat; a peer silent for LIVENESS intervals is dead.
HEARTBEAT_INTERVAL: Final = 0.5
LIVENESS: Final = 3

EMPTY_HEADER: Final = msgpack.packb({})
# The services of upstream servers are `upstream.<server>` (bus/messages.py names them; the
# broker, which loads no message models, checks what their workers may publish).
UPSTREAM_PREFIX: Final = "upstream."
# Every upstream worker process also registers as `upstream-state.<server>`, its lifecycle state
# as its metadata (PROTOCOL.md, "Upstream lifecycle").
UPSTREAM_STATE_PREFIX: Final = "upstream-state."

# What unpacking a frame from the wire raises for bytes that are not a valid value.
UNDECODABLE: Final = (ValueError, TypeError, msgpack.UnpackException)

# Extension types (PROTOCOL.md, "Values"). JSON has integers of any size, msgpack of 64 bits:
# a larger one travels as its decimal digits and is an int again on the other side.
EXT_BIG_INT: Final = 1


def _extension(obj: Any) -> Any:
    if type(obj) is int:  # msgpack asks only for what it cannot pack itself
        return msgpack.ExtType(EXT_BIG_INT, str(obj).encode("ascii"))
    raise TypeError(f"cannot pack {type(obj).__name__}")


def _extension_value(code: int, data: bytes) -> Any:
    if code == EXT_BIG_INT and data.lstrip(b"-").isdigit():
        return int(data)
    raise ValueError(f"bad msgpack extension (type {code})")  # undecodable, like any bad body


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, default=_extension)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_extension_value)
