"""workers.mcp_http_client: the `everything` reference server over Streamable HTTP and SSE."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.support import free_port
from tests.workers.upstreams import (
    EVERYTHING,
    LONG_OP,
    NODE,
)
from workers.mcp_client import UpstreamClient
from workers.upstream_types import (
    UpstreamSpec,
)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("mode", "path", "transport"),
    [
        ("streamableHttp", "/mcp", "streamable_http"),
        ("streamableHttp", "/mcp", "http"),
        ("sse", "/sse", "sse"),
    ],
)
async def test_http_transports(mode: str, path: str, transport: str) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        str(NODE), str(EVERYTHING), mode,
        env={**os.environ, "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        spec = UpstreamSpec(
            name="ev-http", transport=transport, url=f"http://127.0.0.1:{port}{path}",
            headers={"X-Agent-Mesh": "test"},
        )  # fmt: skip
        async with UpstreamClient(spec) as client:
            assert "echo" in {t["name"] for t in client.tools}
            result = await client.call_tool("echo", {"message": "over http"}, timeout=5)
            assert result == {"content": [{"type": "text", "text": "Echo: over http"}]}
            seen: list[float] = []

            async def on_progress(params: dict[str, Any]) -> None:
                seen.append(params["progress"])

            await client.call_tool(LONG_OP, {"duration": 0.3, "steps": 3}, 5, on_progress)
            assert seen == [1, 2, 3]
    finally:
        server.kill()
        await server.wait()
