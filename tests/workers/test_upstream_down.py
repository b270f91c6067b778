"""An upstream that cannot be started: the reason in words (not `[Errno 2]`), a back-off of
1 s, 2 s, 4 s… capped at 30 s instead of a restart loop, and the reason on the bus
(`upstream-down.<server>`) until an upstream runs again. Real processes, real broker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.messages import upstream_down_service
from mesh_config.model import McpServer
from tests.support import REPO, npm_server
from workers import upstream
from workers.mcp_client import UpstreamClient
from workers.upstream import spec_for
from workers.upstream_down import Backoff
from workers.upstream_types import UpstreamGone


def test_backoff_doubles_to_30s_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff()
    assert [backoff.after(0.1) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.failures == 7
    assert backoff.after(60) == 0 and backoff.failures == 0  # ran fine, then died: at once
    assert backoff.after(0.0) == 1


async def _start_failure(server: McpServer, cwd: str = str(REPO)) -> UpstreamGone:
    with pytest.raises(UpstreamGone) as err:
        async with UpstreamClient(spec_for(server, cwd)):
            pass
    return err.value


async def test_a_missing_command_is_named() -> None:
    err = await _start_failure(McpServer(name="filesystem", command="does-not-exist"))
    assert err.reason == "command 'does-not-exist' not found on PATH"
    assert "Errno" not in str(err)


async def test_a_relative_command_is_taken_from_the_working_directory(tmp_path: Path) -> None:
    err = await _start_failure(McpServer(name="local", command="./server.sh"), cwd=str(tmp_path))
    assert err.reason == f"command './server.sh' not found (no {tmp_path}/server.sh)"


async def test_an_exit_says_its_code_and_last_stderr_line() -> None:
    script = 'echo "starting" >&2; echo "fatal: no such table: tools" >&2; echo >&2; exit 3'
    err = await _start_failure(McpServer(name="db", command="sh", args=["-c", script]))
    assert err.reason == "exited with code 3: fatal: no such table: tools"


async def test_an_immediate_exit_is_an_exit_not_a_pipe_error() -> None:
    for _ in range(5):  # whether it is gone before or after we write initialize
        err = await _start_failure(McpServer(name="quick", command="false"))
        assert err.reason == "exited with code 1"


async def _down_meta(client: BusClient, server: str) -> dict[str, Any] | None:
    report = await client.request("mmi.services", {}, timeout=2.0)
    workers = (report.get(upstream_down_service(server)) or {}).get("workers") or []
    return workers[0]["meta"] if workers else None


async def test_the_worker_backs_off_and_says_why_on_the_bus(
    broker: Broker, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    original = UpstreamClient.start

    async def counted(self: UpstreamClient) -> None:
        attempts.append(time.monotonic())
        await original(self)

    monkeypatch.setattr(UpstreamClient, "start", counted)
    server = McpServer(name="filesystem", command="does-not-exist")
    worker = asyncio.create_task(upstream.run(endpoints.requests, server, 0, str(REPO)))
    async with BusClient(endpoints.requests) as client:
        try:
            deadline = time.monotonic() + 15
            while len(attempts) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            meta = await _down_meta(client, "filesystem")
            assert meta is not None
            assert meta["reason"] == "command 'does-not-exist' not found on PATH"
            assert meta["failures"] >= 3 and meta["retry_at"] > meta["since"] > 0
            gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts)]
            assert gaps[:3] == pytest.approx([1, 2, 4], abs=0.3), gaps
            answer = await client.request(upstream_down_service("filesystem"), {}, timeout=2.0)
            assert answer["reason"] == meta["reason"]
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        deadline = time.monotonic() + 5
        while await _down_meta(client, "filesystem") is not None:
            assert time.monotonic() < deadline, "the down registration outlived the worker"
            await asyncio.sleep(0.05)


async def test_the_reason_goes_once_an_upstream_runs(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    link = tmp_path / "server"  # missing at first, then the real server appears
    server = McpServer(name="fs", command=str(link), args=[str(tmp_path)])
    worker = asyncio.create_task(upstream.run(endpoints.requests, server, 0, str(tmp_path)))
    async with BusClient(endpoints.requests) as client:
        try:
            deadline = time.monotonic() + 10
            while (meta := await _down_meta(client, "fs")) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert meta["reason"] == f"command '{link}' not found"
            link.symlink_to(npm_server("filesystem"))
            deadline = time.monotonic() + 20
            while True:
                report = await client.request("mmi.services", {}, timeout=2.0)
                if (report.get("upstream.fs") or {}).get("workers"):
                    break
                assert time.monotonic() < deadline, report
                await asyncio.sleep(0.05)
            assert await _down_meta(client, "fs") is None
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
