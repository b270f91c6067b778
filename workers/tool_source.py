"""What an upstream worker (workers/upstream.py) serves: an MCP client session
(`workers.mcp_client.UpstreamClient`) or a `LocalSource`, a tool source run in the worker itself
(a CLI tool, an OpenAPI backend) behind the same interface, so that it gets the same bus
service, catalogue, policy, approvals, traces, crash isolation and `workers: N`.

A local source has tools (MCP `Tool` dicts), answers `call_tool` with an MCP `CallToolResult`
dict (`isError: true` for the tool's own failure), has no resources or prompts, and never
"dies" on its own: `closed` is only set by `close()`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from workers.upstream_types import LogCallback, ProgressCallback, UpstreamError

METHOD_NOT_FOUND = -32601


class ToolRefused(ValueError):
    """The call's arguments are refused by the source itself, before anything ran (a 400)."""


class LocalSource:
    kind = "local"

    def __init__(self, name: str) -> None:
        self.name = name
        self.tools: list[dict[str, Any]] = []
        self.server_info: dict[str, Any] = {}
        self.pid: int | None = os.getpid()
        self.closed = asyncio.Event()
        self.tools_changed = asyncio.Event()  # never set: the tool list is fixed by the config
        self.list_changed = asyncio.Event()
        self.list_changes: dict[str, int] = {"resources": 0, "prompts": 0}
        self.on_resource_updated: Callable[[dict[str, Any]], None] | None = None
        self.on_ask: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    def identity(self, version: str) -> None:
        self.server_info = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": f"agent-mesh {self.kind} {self.name}", "version": version},
        }

    async def start(self) -> None:
        """Load what the tools are made from; raise with a clear message if it cannot be."""

    async def close(self) -> None:
        self.closed.set()

    @property
    def gone_reason(self) -> str:
        return "stopped"

    def knows(self, tool: str) -> bool:
        return any(t["name"] == tool for t in self.tools)

    async def refresh_tools(self) -> list[dict[str, Any]]:
        return self.tools

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        raise UpstreamError(
            METHOD_NOT_FOUND,
            f"{self.name} is a {self.kind} tool source: it has tools only ({method} is not served)",
        )


def tool_result(structured: dict[str, Any], text: str, error: bool) -> dict[str, Any]:
    """An MCP CallToolResult with both renderings: text for the model, the object for code."""
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": error,
    }
