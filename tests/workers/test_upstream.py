"""The upstream service with a real npm MCP server: how a request's deadline bounds its call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bus import frames
from bus.errors import BusError
from bus.worker import Request
from mesh_config.model import McpServer
from tests.support import REPO, npm_server
from workers.mcp_client import UpstreamClient
from workers.upstream import UpstreamService, spec_for

LONG_OP = "trigger-long-running-operation"


@pytest.fixture
async def service() -> AsyncIterator[UpstreamService]:
    server = McpServer(
        name="everything", command=npm_server("everything"), args=["stdio"], timeout_seconds=60
    )
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
        await service.handle(
            _request({"tool": LONG_OP, "arguments": {"duration": 10, "steps": 2}}, remaining=0.5)
        )
    assert err.value.code == frames.TIMEOUT and "gave no answer in 0.4" in err.value.message
    assert time.monotonic() - started < 3
    assert await service.handle(_request({"tool": "echo", "arguments": {"message": "hi"}}, 5)) == {
        "content": [{"type": "text", "text": "Echo: hi"}]
    }


async def test_calls_held_by_a_dying_server_say_it_went_away(endpoints: Any, broker: Any) -> None:
    """The MCP server dies with calls in flight: each caller hears UPSTREAM_GONE from the worker
    (its own reason), not WORKER_DIED from the broker, although the worker then leaves the bus."""
    import asyncio
    import os
    import signal

    from bus.client import BusClient
    from workers.upstream_run import _serve

    server = McpServer(
        name="everything", command=npm_server("everything"), args=["stdio"], timeout_seconds=60
    )
    client = UpstreamClient(spec_for(server, str(REPO)))
    await client.start()
    serving = asyncio.create_task(_serve(endpoints.requests, server, "everything:0", client))
    try:
        async with BusClient(endpoints.requests) as bus:
            # The worker joins the broker in its own time: ask until it serves (with a deadline).
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    await bus.request(
                        "upstream.everything",
                        {"tool": "echo", "arguments": {"message": "up"}},
                        timeout=10,
                    )
                    break
                except BusError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            # Each call's first progress (after 0.1 s) says the server is running it.
            body = {"tool": LONG_OP, "arguments": {"duration": 30, "steps": 300}}
            running: set[int] = set()

            def progressed(n: int) -> Callable[[Any], None]:
                return lambda _: running.add(n)

            calls = [
                asyncio.create_task(
                    bus.request(
                        "upstream.everything",
                        {**body, "n": n},
                        timeout=20,
                        on_partial=progressed(n),
                    )
                )
                for n in range(8)
            ]
            while len(running) < 8:
                assert asyncio.get_running_loop().time() < deadline + 10, running
                await asyncio.sleep(0.01)
            assert client.pid is not None
            os.kill(client.pid, signal.SIGKILL)
            errors = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(e, BusError) for e in errors), errors
        assert {e.code for e in errors if isinstance(e, BusError)} == {frames.UPSTREAM_GONE}, errors
        await asyncio.wait_for(serving, 5)
    finally:
        serving.cancel()
        await client.close()
