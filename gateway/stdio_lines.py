"""The stdio connector's input, line by line, before the MCP SDK reads it.

The SDK's stdio transport drops a line its JSON parser refuses without answering (JSON-RPC asks
for an error): a request whose arguments hold a lone surrogate (`"\\ud800"`, which Python's
`json` reads and pydantic's does not) would leave its caller waiting forever. Such a request is
handed on as a `REFUSED` request with the same id, which MeshMcp answers with -32602 naming
the bad value's path. A line that is not JSON, or has no id, has nobody waiting on it: dropped
as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types

from bus.json_values import refusal

REFUSED = "agent-mesh/refused"  # never sent by a client: only made here


class ScreenedLines:
    """An async iterator of text lines (what the SDK's stdio_server reads) over `lines`."""

    def __init__(self, lines: Any) -> None:
        self.lines = lines

    def __aiter__(self) -> AsyncIterator[str]:
        return self._screened()

    async def _screened(self) -> AsyncIterator[str]:
        async for line in self.lines:
            yield screen(line)


def screen(line: str) -> str:
    """`line`, or a REFUSED request in its place when the SDK would drop it unanswered."""
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return line
    except ValueError:
        pass
    try:
        message = json.loads(line)
    except ValueError:
        return line  # not JSON: the SDK drops it (no id to answer)
    if (
        not isinstance(message, dict)
        or not isinstance(message.get("id"), int | str)
        or "method" not in message
    ):
        return line
    why = refusal(message.get("params"), "params") or "the request is not a valid JSON-RPC message"
    return (
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": message["id"],
                "method": REFUSED,
                "params": {"message": f"invalid {why}"},
            }
        )
        + "\n"
    )
