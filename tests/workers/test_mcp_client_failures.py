"""workers.mcp_client when the upstream fails under a call: a timeout (cancelled upstream, the
session survives), the server killed mid-call (directly, behind npx, behind a wrapper holding
the pipes, on uvloop), a server that cannot start, a caller that gives up.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import uvloop

from tests.workers.upstreams import (
    EVERYTHING,
    LONG_OP,
    NODE,
    everything_spec,
    group_alive,
    mid_call,
)
from workers.mcp_client import UpstreamClient
from workers.upstream_types import (
    UpstreamClosed,
    UpstreamGone,
    UpstreamTimeout,
)


@pytest.mark.timeout(15)
async def test_timeout_cancels_upstream_and_session_survives(tmp_path: Path) -> None:
    # `tee` records everything we write to the server, to see the cancellation.
    wire = tmp_path / "to-server.jsonl"
    spec = everything_spec(
        command="sh",
        args=("-c", 'tee "$0" | exec "$1" "$2" stdio', str(wire), str(NODE), str(EVERYTHING)),
    )
    async with UpstreamClient(spec) as client:
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await client.call_tool(LONG_OP, {"duration": 1, "steps": 2}, timeout=0.3)
        assert time.monotonic() - t0 < 1.5
        ok = await client.call_tool("echo", {"message": "after"}, timeout=5)
        assert ok["content"][0]["text"] == "Echo: after"
        assert not client.closed.is_set()

    sent = [json.loads(line) for line in wire.read_text().splitlines()]
    call_id = next(
        m["id"] for m in sent if m.get("method") == "tools/call" and m["params"]["name"] == LONG_OP
    )
    cancels = [m for m in sent if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [call_id]
    assert cancels[0]["params"]["reason"] == "timed out after 0.3s"


@pytest.mark.timeout(15)
async def test_sigkill_mid_call(everything: UpstreamClient) -> None:
    call = await mid_call(everything)
    assert everything.pid is not None
    t0 = time.monotonic()
    os.kill(everything.pid, signal.SIGKILL)
    with pytest.raises(UpstreamGone):
        await asyncio.wait_for(call, 5)
    assert time.monotonic() - t0 < 1  # noticed at once (process_exited), not by polling
    assert everything.closed.is_set()
    # A call after the close is never sent: its own error (the worker answers 503, not 502),
    # naming why the server went away.
    with pytest.raises(
        UpstreamClosed, match=r"^its connection is closed: (killed by SIGKILL|stdout closed)"
    ):
        await everything.call_tool("echo", {"message": "x"}, timeout=5)


@pytest.mark.timeout(20)
async def test_npx_launcher_killed_mid_call() -> None:
    # npx -> sh -> node: killing npx leaves node alive holding our pipes, so
    # stdout never hits EOF; the client must notice the child itself.
    assert shutil.which("npx"), "npx not on PATH: install npm (.ci/run does)"
    spec = everything_spec(
        command="npx", args=("-y", "@modelcontextprotocol/server-everything", "stdio")
    )
    async with UpstreamClient(spec) as client:
        assert any(t["name"] == "echo" for t in client.tools)
        pid = client.pid
        assert pid is not None
        call = await mid_call(client)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UpstreamGone):
            await asyncio.wait_for(call, 5)
        assert time.monotonic() - t0 < 3
        await asyncio.wait_for(client.closed.wait(), 1)
    deadline = time.monotonic() + 3
    while group_alive(pid) and time.monotonic() < deadline:  # the orphaned node is reaped too
        await asyncio.sleep(0.05)
    assert not group_alive(pid)


@pytest.mark.timeout(15)
async def test_start_failures() -> None:
    with pytest.raises(UpstreamGone):
        await UpstreamClient(everything_spec(command="/nonexistent/mcp-server")).start()
    t0 = time.monotonic()
    client = UpstreamClient(everything_spec(args=("-e", "process.exit(3)")))
    with pytest.raises(UpstreamGone):
        await client.start()
    assert time.monotonic() - t0 < 3
    assert client.closed.is_set()


@pytest.mark.timeout(15)
async def test_cancelling_the_caller_cancels_upstream(tmp_path: Path) -> None:
    wire = tmp_path / "to-server.jsonl"
    spec = everything_spec(
        command="sh",
        args=("-c", 'tee "$0" | exec "$1" "$2" stdio', str(wire), str(NODE), str(EVERYTHING)),
    )
    async with UpstreamClient(spec) as client:
        call = await mid_call(client, 2)
        call.cancel()  # what the upstream worker does on a bus CANCEL
        with pytest.raises(asyncio.CancelledError):
            await call
        ok = await client.call_tool("echo", {"message": "after"}, timeout=5)
        assert ok["content"][0]["text"] == "Echo: after"

    sent = [json.loads(line) for line in wire.read_text().splitlines()]
    call_id = next(
        m["id"] for m in sent if m.get("method") == "tools/call" and m["params"]["name"] == LONG_OP
    )
    cancels = [m for m in sent if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [call_id]


@pytest.mark.timeout(20)
def test_on_uvloop_with_a_wrapper_holding_the_pipes() -> None:
    # The workers' event loop. sh stays the group leader and node, its child, holds the pipes:
    # killing sh must be noticed all the same, and node must go with the group.
    spec = everything_spec(
        command="sh", args=("-c", '"$0" "$1" stdio; :', str(NODE), str(EVERYTHING))
    )

    async def main() -> int:
        async with UpstreamClient(spec) as client:
            big = "é" * (1 << 20)
            echoed = await client.call_tool("echo", {"message": big}, timeout=10)
            assert echoed["content"][0]["text"] == "Echo: " + big
            call = await mid_call(client)
            assert client.pid is not None
            t0 = time.monotonic()
            os.kill(client.pid, signal.SIGKILL)
            with pytest.raises(UpstreamGone):
                await asyncio.wait_for(call, 5)
            assert time.monotonic() - t0 < 1
            assert client.closed.is_set()
            return client.pid

    pid = uvloop.run(main())
    deadline = time.monotonic() + 3
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(pid)
