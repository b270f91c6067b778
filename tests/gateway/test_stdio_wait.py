"""The stdio connector's wait for upstreams at the start of a session: it waits for servers that
are starting, not for one whose workers already said why it is down. Real broker, workers and
npm server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from gateway import stdio
from gateway.catalog import Catalog
from mesh_config.model import McpServer
from tests.bus.conftest import broker, endpoints  # noqa: F401 - the real broker on ipc, reused
from tests.support import npm_server
from workers import upstream_run


async def test_a_server_that_failed_to_start_is_not_waited_for(
    broker: Broker,  # noqa: F811 - the fixture imported above
    endpoints: Endpoints,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers = [
        McpServer(name="fs", command=npm_server("filesystem"), args=[str(tmp_path)]),
        McpServer(name="missing", command="does-not-exist"),
    ]
    workers = [
        asyncio.create_task(upstream_run.run(endpoints.requests, s, 0, str(tmp_path)))
        for s in servers
    ]
    try:
        async with BusClient(endpoints.requests) as client:
            catalog = Catalog(client, [s.name for s in servers])
            started = time.monotonic()
            await stdio._wait_for_upstreams(SimpleNamespace(catalog=catalog))  # type: ignore[arg-type]
            took = time.monotonic() - started
            assert catalog.servers["fs"].up  # waited for the one starting
            assert catalog.servers["missing"].reason == "command 'does-not-exist' not found on PATH"
            assert took < stdio.UPSTREAM_WAIT / 2, took  # not for the one that cannot start
        assert (
            "serving without upstreams that are down: missing (command 'does-not-exist' not found "
            "on PATH)" in caplog.text
        )
    finally:
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
