"""An upstream that cannot be started: the reason in words (not `[Errno 2]`), a back-off of
1 s, 2 s, 4 s… instead of a restart loop, and every step of its lifecycle on the bus: the
`upstream-state.<server>` registration's metadata and the `upstream.<server>.<state>` events.
Real processes, real broker, real npm servers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.events import Subscriber
from bus.messages import UpstreamState, upstream_state_service
from mesh_config.model import McpServer
from tests.support import REPO, npm_server
from workers import upstream_run
from workers.mcp_client import UpstreamClient
from workers.upstream import spec_for
from workers.upstream_lifecycle import Backoff
from workers.upstream_types import UpstreamGone


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


async def test_an_exit_names_the_error_line_not_the_runtimes_footer(tmp_path: Path) -> None:
    # A wrong path to a node server: node prints the error, its stack, then "Node.js v20...".
    missing = tmp_path / "dist" / "indx.js"
    err = await _start_failure(McpServer(name="fs", command="node", args=[str(missing)]))
    assert err.reason == f"exited with code 1: Error: Cannot find module '{missing}'"
    # A Python server's traceback ends with its error line: that one.
    script = "import no_such_module_here"
    err = await _start_failure(McpServer(name="py", command="python3", args=["-c", script]))
    assert err.reason == (
        "exited with code 1: ModuleNotFoundError: No module named 'no_such_module_here'"
    )


async def test_an_immediate_exit_is_an_exit_not_a_pipe_error() -> None:
    for _ in range(5):  # whether it is gone before or after we write initialize
        err = await _start_failure(McpServer(name="quick", command="false"))
        assert err.reason == "exited with code 1"


async def _states(client: BusClient, server: str) -> list[dict[str, Any]]:
    report = await client.request("mmi.services", {}, timeout=2.0)
    workers = (report.get(upstream_state_service(server)) or {}).get("workers") or []
    return [w["meta"] for w in workers]


async def _until_state(
    client: BusClient, server: str, state: str, seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        states = await _states(client, server)
        if states and states[0]["state"] == state:
            return states[0]
        assert time.monotonic() < deadline, f"{server} never {state}: {states}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _worker(endpoints: Endpoints, server: McpServer, cwd: str) -> AsyncIterator[None]:
    task = asyncio.create_task(upstream_run.run(endpoints.requests, server, 0, cwd))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _subscribe(endpoints: Endpoints, prefix: str) -> Subscriber:
    assert endpoints.events_out is not None
    return Subscriber(endpoints.events_out, prefix)


async def _events(subscriber: Subscriber, until: str, seconds: float) -> list[str]:
    """The states published (`upstream.<server>.<state>`) up to and including `until`."""
    seen: list[str] = []

    async def read() -> None:
        async for topic, body in subscriber:
            assert topic == f"upstream.{body['server']}.{body['state']}"
            UpstreamState.model_validate(body)
            seen.append(body["state"])
            if body["state"] == until:
                return

    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        raise AssertionError(f"no {until} event; saw {seen}") from None
    return seen


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
    events = _subscribe(endpoints, "upstream.filesystem.")
    async with BusClient(endpoints.requests) as client:
        async with _worker(endpoints, server, str(REPO)):
            seen = await _events(events, "backing_off", 10)
            assert seen[-1] == "backing_off"
            deadline = time.monotonic() + 15
            while len(attempts) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            state = (await _states(client, "filesystem"))[0]
            assert state["state"] in ("backing_off", "starting"), state
            assert state["reason"] == "command 'does-not-exist' not found on PATH"
            assert state["instance"] == "filesystem:0" and state["pid"] == os.getpid()
            assert state["failures"] >= 3 and state["since"] > 0
            gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts)]
            assert gaps[:3] == pytest.approx([1, 2, 4], abs=0.3), gaps
            answer = await client.request(upstream_state_service("filesystem"), {}, timeout=2.0)
            assert answer["reason"] == state["reason"]
        events.close()
        deadline = time.monotonic() + 5
        while await _states(client, "filesystem"):
            assert time.monotonic() < deadline, "the state registration outlived the worker"
            await asyncio.sleep(0.05)


async def test_the_reason_goes_once_an_upstream_runs(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    link = tmp_path / "server"  # missing at first, then the real server appears
    server = McpServer(name="fs", command=str(link), args=[str(tmp_path)])
    async with BusClient(endpoints.requests) as client, _worker(endpoints, server, str(tmp_path)):
        state = await _until_state(client, "fs", "backing_off", 10)
        assert state["reason"] == f"command '{link}' not found" and state["retry_at"] > 0
        link.symlink_to(npm_server("filesystem"))
        state = await _until_state(client, "fs", "up", 20)
        assert state["reason"] == "" and state["failures"] == 0
        report = await client.request("mmi.services", {}, timeout=2.0)
        assert (report.get("upstream.fs") or {}).get("workers"), report


async def _kill_upstream(client: BusClient) -> None:
    report = await client.request("mmi.services", {}, timeout=2.0)
    os.killpg(report["upstream.fs"]["workers"][0]["meta"]["upstream_pid"], signal.SIGKILL)


async def test_a_killed_upstream_is_restarting_then_up_again(
    broker: Broker, endpoints: Endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any run counts as healthy here (the real threshold is HEALTHY_RUN, 5 s of serving).
    monkeypatch.setattr(upstream_run, "Backoff", functools.partial(Backoff, healthy=1e-6))
    server = McpServer(name="fs", command=npm_server("filesystem"), args=[str(tmp_path)])
    events = _subscribe(endpoints, "upstream.fs.")
    async with BusClient(endpoints.requests) as client, _worker(endpoints, server, str(tmp_path)):
        assert await _events(events, "up", 20) == ["up"]
        first = await _until_state(client, "fs", "up", 5)
        await _kill_upstream(client)
        assert await _events(events, "up", 20) == ["restarting", "up"]
        again = await _until_state(client, "fs", "up", 5)
        assert again["seq"] == first["seq"] + 2 and again["since"] > first["since"]
    events.close()


async def test_an_upstream_that_dies_soon_after_its_start_is_backed_off(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    server = McpServer(name="fs", command=npm_server("filesystem"), args=[str(tmp_path)])
    events = _subscribe(endpoints, "upstream.fs.")
    async with BusClient(endpoints.requests) as client, _worker(endpoints, server, str(tmp_path)):
        assert await _events(events, "up", 20) == ["up"]
        await _kill_upstream(client)  # long before HEALTHY_RUN
        assert await _events(events, "up", 20) == ["backing_off", "starting", "up"]
        state = await _until_state(client, "fs", "up", 5)
        assert state["failures"] == 0 and state["reason"] == ""
    events.close()
