"""Upstream worker: one process per upstream server instance (×`workers`). Owns one live MCP
client session (workers/mcp_client.py) and serves `upstream.<server>` on the bus.

When the upstream dies the worker exits non-zero: supervisord restarts it with a fresh upstream,
and meanwhile the broker answers this worker's in-flight calls with a clear error.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pydantic import ValidationError

from agent_mesh.config import McpServer
from bus import frames
from bus.errors import BusError, bad_request, not_found
from bus.messages import ToolCall, UpstreamMeta, upstream_service
from bus.worker import BusWorker, Request
from workers.mcp_client import UpstreamClient, UpstreamError, UpstreamGone, UpstreamSpec, UpstreamTimeout

log = logging.getLogger(__name__)

CAPACITY = 64  # concurrent calls per worker: one MCP session multiplexes them


def spec_for(server: McpServer, default_cwd: str | None = None) -> UpstreamSpec:
    """stdio servers start in the config file's directory unless `cwd` says otherwise."""
    return UpstreamSpec(
        name=server.name,
        transport=server.transport,
        command=server.command,
        args=tuple(server.args),
        env=dict(server.env),
        cwd=server.cwd or default_cwd if server.transport == "stdio" else None,
        url=str(server.url) if server.url else None,
        headers=dict(server.headers),
    )


class UpstreamService:
    def __init__(self, server: McpServer, client: UpstreamClient) -> None:
        self.server = server
        self.client = client
        self.tool_names = {t["name"] for t in client.tools}

    def meta(self) -> dict[str, Any]:
        return UpstreamMeta(server=self.server.name, tools=self.client.tools, server_info=self.client.server_info,
                            pid=os.getpid()).dump()

    async def handle(self, request: Request) -> Any:
        try:
            call = ToolCall.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(f"{self.server.name}: invalid tool call: {exc.errors()[0]['msg']}") from None
        if call.tool not in self.tool_names:
            raise not_found(f"unknown tool {self.server.name}.{call.tool}")
        timeout = min(call.timeout or self.server.timeout_seconds, request.remaining or self.server.timeout_seconds)

        async def progress(params: dict[str, Any]) -> None:
            request.partial({"progress": params})

        try:
            return await self.client.call_tool(call.tool, call.arguments, timeout, on_progress=progress)
        except UpstreamTimeout:
            raise BusError(frames.TIMEOUT, f"upstream timeout: {self.server.name}.{call.tool} gave no answer "
                                           f"in {timeout:g}s (cancelled upstream)") from None
        except UpstreamGone as exc:
            raise BusError(frames.WORKER_DIED, f"upstream unavailable: {self.server.name} ({exc})") from None
        except UpstreamError as exc:
            raise BusError(502, f"upstream error from {self.server.name}: {exc}") from None


async def run(endpoint: str, server: McpServer, slot: str, default_cwd: str | None = None) -> int:
    """Serve until the upstream dies; return the exit status (non-zero: please restart me)."""
    try:
        client = UpstreamClient(spec_for(server, default_cwd))
        await client.start()
    except Exception as exc:
        log.error("%s: upstream failed to start: %s", server.name, exc)
        return 1
    try:
        service = UpstreamService(server, client)
        log.info("%s: upstream ready with %d tools", server.name, len(service.tool_names))
        worker = BusWorker(endpoint, upstream_service(server.name), service.handle, capacity=CAPACITY,
                           slot=slot, meta=service.meta())
        serving = asyncio.create_task(worker.run())
        upstream_lost = asyncio.create_task(client.closed.wait())
        try:
            await asyncio.wait({serving, upstream_lost}, return_when=asyncio.FIRST_COMPLETED)
            log.error("%s: upstream connection lost; exiting so supervisord restarts this worker", server.name)
        finally:
            worker.stop()
            for task in (serving, upstream_lost):
                task.cancel()
            await asyncio.gather(serving, upstream_lost, return_exceptions=True)
    finally:
        await client.close()
    return 1
