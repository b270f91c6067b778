"""`agent-mesh connect --url URL`: a thin stdio ⇄ Streamable HTTP relay, so Claude Code (stdio)
can use a mesh running in another process or on another host. No upstreams, no policy of its
own: MCP messages are relayed both ways as they are, with the agent identity as the bearer.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

log = logging.getLogger(__name__)


async def _relay(source: Any, sink: Any, what: str) -> None:
    async for message in source:
        if isinstance(message, Exception):  # transport trouble on one message: report, keep going
            log.warning("%s: %s", what, message)
            continue
        await sink.send(message)


async def relay(url: str, agent: str) -> None:
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/mcp") else "/mcp")
    http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{agent}"})
    async with (
        http,
        streamable_http_client(endpoint, http_client=http) as remote,
        stdio_server() as local,
        anyio.create_task_group() as tasks,
    ):
        async def to_remote() -> None:
            await _relay(local[0], remote[1], "from stdin")
            tasks.cancel_scope.cancel()  # stdin closed: the client is gone, end the session

        tasks.start_soon(to_remote)
        await _relay(remote[0], local[1], f"from {endpoint}")
        tasks.cancel_scope.cancel()


def main(url: str, agent: str) -> int:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="agent-mesh connect: %(levelname)s %(message)s")
    try:
        uvloop.run(relay(url, agent))
    except KeyboardInterrupt:
        pass
    return 0
