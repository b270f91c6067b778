"""The governed path (gateway/pipeline.py) when something fails: a mesh service or the bus down,
the upstream failing after allow or after approval, a cancelled caller, params the bus cannot
carry, a name that is no tool. The stand-ins: tests/gateway/fakes.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus import frames
from bus.client import CONNECTION_LOST, PartialHandler
from bus.errors import BusError, unavailable, upstream_error, upstream_timeout
from bus.messages import (
    APPROVAL,
    POLICY,
    ToolCall,
    UpstreamRequest,
    UpstreamState,
    UpstreamStateName,
)
from tests.gateway.fakes import RESULT, Governed, Upstream


@pytest.mark.parametrize(
    ("service", "tool", "said"),
    [
        (POLICY, "read_file", "policy service unavailable: no worker"),
        (APPROVAL, "write_file", "approval service unavailable: no worker"),
    ],
)
async def test_a_mesh_service_down_is_a_503(
    mesh: Governed, service: str, tool: str, said: str
) -> None:
    mesh.bus.down[service] = unavailable("no worker")
    outcome = await mesh.call(tool)
    assert (outcome.status, outcome.policy, outcome.error) == (503, "error", said)
    assert mesh.bus.to("upstream.fs") == []
    assert mesh.traces.records[-1]["status_code"] == 503


async def test_the_bus_lost_mid_call_says_it_may_have_run(mesh: Governed) -> None:
    mesh.bus.down[POLICY] = BusError(frames.UNAVAILABLE, CONNECTION_LOST)
    outcome = await mesh.call("read_file")
    assert outcome.status == 503
    assert outcome.error == (
        f"mesh bus unavailable: {CONNECTION_LOST} (the call may or may not have reached fs)"
    )


def _failing(exc: BusError) -> Upstream:
    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        raise exc

    return upstream


@pytest.mark.parametrize(
    ("exc", "http", "said"),
    [
        (upstream_error("fs.read_file", -32000, "boom"), 502, "upstream error from fs.read_file"),
        (upstream_timeout("fs.read_file", 7.0), 504, "upstream timeout: fs.read_file gave no"),
        (BusError(frames.UPSTREAM_GONE, "fs exited (code 1)"), 502, "fs exited (code 1)"),
        (BusError(frames.WORKER_DIED, "worker gone"), 502, "upstream fs: its worker died"),
        (unavailable("no worker for upstream.fs"), 503, "upstream unavailable: fs (no worker"),
    ],
)
async def test_an_upstream_failure_after_allow(
    mesh: Governed, exc: BusError, http: int, said: str
) -> None:
    mesh.bus.upstream = _failing(exc)
    outcome = await mesh.call("read_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (http, "allow", "claude")
    assert outcome.error.startswith(said), outcome.error
    assert outcome.forwarded and not outcome.refused_by_policy
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["policy"], trace["error"]) == (http, "allow", outcome.error)


async def test_a_down_upstream_is_named_with_its_reason(mesh: Governed) -> None:
    view = mesh.catalog.servers["fs"]
    view.workers = []
    view.states = [
        UpstreamState(
            server="fs",
            instance="fs:0",
            state=UpstreamStateName.BACKING_OFF,
            reason="command 'mcp-fs' not found on PATH",
            failures=1,
        )
    ]
    mesh.bus.upstream = _failing(unavailable("no worker for upstream.fs"))
    outcome = await mesh.call("read_file")
    assert (outcome.status, outcome.error) == (
        503,
        "upstream unavailable: fs: command 'mcp-fs' not found on PATH",
    )


async def test_an_upstream_failure_after_approval(mesh: Governed) -> None:
    mesh.bus.upstream = _failing(upstream_timeout("fs.write_file", 7.0))
    call = asyncio.create_task(mesh.call("write_file"))
    mesh.approvals.resolve(await mesh.pending(), "approved", "alice", None, None)
    outcome = await call
    assert (outcome.status, outcome.policy, outcome.approval_status) == (
        504,
        "human_approval",
        "approved",
    )
    assert outcome.error.startswith("upstream timeout: fs.write_file")


async def test_a_passed_through_request_keeps_the_upstreams_error(mesh: Governed) -> None:
    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        assert body["method"] == "resources/read" and body["timeout"] == 7.0
        return {"error": {"code": -32002, "message": "no such resource", "data": {"uri": "x"}}}

    mesh.bus.upstream = upstream
    request = UpstreamRequest(method="resources/read", params={"uri": "file:///x"})
    upstream_call = mesh.pipeline.upstream_call("fs", request)
    assert upstream_call is not None
    params = {"uri": "file:///x"}
    outcome = await mesh.pipeline.governed("claude", "fs.read_x", params, upstream_call)
    assert (outcome.status, outcome.policy, outcome.rpc_code) == (404, "allow", -32002)
    assert (outcome.error, outcome.rpc_data) == ("no such resource", {"uri": "x"})


async def test_a_cancelled_caller_is_traced_499(mesh: Governed) -> None:
    started = asyncio.Event()

    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        started.set()
        await asyncio.Event().wait()  # never answers

    mesh.bus.upstream = upstream
    call = asyncio.create_task(mesh.call("read_file"))
    await asyncio.wait_for(started.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["error"]) == (499, "cancelled by the client")


async def test_params_the_bus_cannot_carry_are_refused_untraced(mesh: Governed) -> None:
    upstream = mesh.pipeline.upstream_call("fs", ToolCall(tool="read_file"))
    assert upstream is not None
    params = {"x": float("nan")}
    outcome = await mesh.pipeline.governed("claude", "fs.read_file", params, upstream)
    assert (outcome.status, outcome.traced) == (400, False)
    assert outcome.error == "invalid params.x: NaN is not a JSON number"
    assert mesh.bus.sent == [] and mesh.traces.records == []


async def test_a_name_that_is_no_tool_is_a_404_untraced(mesh: Governed) -> None:
    mesh.catalog.servers["fs"].tools = {"read_file": {"name": "read_file"}}
    outcome = await mesh.pipeline.call_tool("claude", "fs.nope", {})
    assert (outcome.status, outcome.error) == (404, "unknown tool fs.nope: fs has no tool 'nope'")
    assert mesh.bus.sent == [] and mesh.traces.records == []
    outcome = await mesh.pipeline.call_tool("claude", "fs.read_file", {})
    assert (outcome.status, outcome.result) == (200, RESULT)
