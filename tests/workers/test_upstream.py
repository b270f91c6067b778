"""The upstream service with a real npm MCP server: how a request's deadline bounds its call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_mesh.config import McpServer
from bus import frames
from bus.errors import BusError
from bus.worker import Request
from tests.support import REPO, npm_server
from workers.mcp_client import UpstreamClient
from workers.upstream import UpstreamService, spec_for

LONG_OP = "trigger-long-running-operation"


@pytest.fixture
async def service() -> AsyncIterator[UpstreamService]:
    server = McpServer(name="everything", command=npm_server("everything"), args=["stdio"],
                       timeout_seconds=60)
    async with UpstreamClient(spec_for(server, str(REPO))) as client:
        yield UpstreamService(server, client)


def _request(body: Any, remaining: float) -> Request:
    # Only the deadline matters here: nothing is sent back on the bus (no worker).
    return Request(body, None, time.monotonic() + remaining, None, b"client", 1)  # type: ignore[arg-type]


async def test_a_passed_deadline_is_not_the_full_timeout(service: UpstreamService) -> None:
    # The caller already got TIMEOUT from the broker: the upstream must not be asked at all
    # (before: a passed deadline fell back to the server's 60 s timeout and the call ran).
    for body in ({"tool": "echo", "arguments": {"message": "late"}}, {"method": "resources/list"}):
        with pytest.raises(BusError) as err:
            await service.handle(_request(body, remaining=-1))
        assert err.value.code == frames.TIMEOUT
        assert "deadline passed before the upstream was asked" in err.value.message


async def test_the_remaining_deadline_bounds_the_call(service: UpstreamService) -> None:
    started = time.monotonic()
    with pytest.raises(BusError) as err:
        await service.handle(_request({"tool": LONG_OP, "arguments": {"duration": 10, "steps": 2}},
                                      remaining=0.5))
    assert err.value.code == frames.TIMEOUT and "gave no answer in 0.4" in err.value.message
    assert time.monotonic() - started < 3
    assert await service.handle(_request({"tool": "echo", "arguments": {"message": "hi"}}, 5)) == {
        "content": [{"type": "text", "text": "Echo: hi"}]}
