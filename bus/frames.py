"""Wire constants of the AMB/1 bus protocol (see bus/PROTOCOL.md). Leaf module: no project imports."""

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
    REQUEST: "REQUEST", CANCEL: "CANCEL", PARTIAL: "PARTIAL", REPLY: "REPLY", ERROR: "ERROR", ANSWER: "ANSWER",
    FORWARD: "FORWARD", EVENT: "EVENT",
    READY: "READY", HEARTBEAT: "HEARTBEAT", DISCONNECT: "DISCONNECT", UPDATE: "UPDATE",
}

# Error codes (HTTP-like; the HTTP status each one answers is in bus/errors.py, HTTP_STATUS).
BAD_REQUEST: Final = 400
FORBIDDEN: Final = 403
NOT_FOUND: Final = 404
CANCELLED: Final = 499
INTERNAL: Final = 500
WORKER_DIED: Final = 502
UNAVAILABLE: Final = 503
TIMEOUT: Final = 504
UPSTREAM_ERROR: Final = 520  # the upstream MCP server answered with a JSON-RPC error of its own
UPSTREAM_GONE: Final = 521  # the upstream MCP server exited / its connection dropped during the request

# Liveness: any message counts as a heartbeat; a peer silent for LIVENESS intervals is dead.
HEARTBEAT_INTERVAL: Final = 0.5
LIVENESS: Final = 3

EMPTY_HEADER: Final = msgpack.packb({})


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
