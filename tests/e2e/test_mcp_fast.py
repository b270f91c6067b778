"""The /mcp fast path (gateway/mcp_fast.py) over raw HTTP: `tools/call` answered as one JSON body,
switched to SSE when a progress notification comes before the result, cancelled by the agent's
`notifications/cancelled`; and the edges it leaves to the SDK answer as the SDK does (bad JSON,
unknown session, batches, notifications) or that the HTTP edge refuses (another agent)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.mesh import Mesh

LONG_OP = "everything.trigger-long-running-operation"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


@pytest.fixture(scope="module")
def mesh(everything_mesh: Mesh) -> Mesh:
    return everything_mesh


def open_session(mesh: Mesh, agent: str = "fast") -> dict[str, str]:
    """Headers of a new initialized session of `agent`."""
    headers = {**HEADERS, "Authorization": f"Bearer agent:{agent}"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    r = mesh.http.post("/mcp", json=init, headers=headers)
    assert r.status_code == 200, r.text
    headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert mesh.http.post("/mcp", json=initialized, headers=headers).status_code == 202
    return headers


def call(rid: int | str, name: Any, arguments: Any, meta: dict[str, Any] | None = None) -> Any:
    params = {"name": name, "arguments": arguments, **({"_meta": meta} if meta else {})}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]


def test_a_result_first_is_one_json_body(mesh: Mesh) -> None:
    headers = open_session(mesh)
    r = mesh.http.post("/mcp", json=call(1, "everything.echo", {"message": "hi"}), headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["mcp-session-id"] == headers["Mcp-Session-Id"]
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"content": [{"type": "text", "text": "Echo: hi"}]},
    }
    # A string id, and errors: the JSON-RPC error of the SDK's dispatcher, with the request's id.
    unknown = mesh.http.post("/mcp", json=call("a", "nosuch.tool", {}), headers=headers).json()
    assert unknown["id"] == "a" and unknown["error"]["code"] < 0, unknown
    bad = mesh.http.post("/mcp", json=call(2, 5, {}), headers=headers).json()
    assert bad["error"] == {
        "code": -32602,
        "message": "tools/call needs a string 'name' and an object 'arguments'",
    }


def test_progress_before_the_result_switches_to_sse(mesh: Mesh) -> None:
    headers = open_session(mesh)
    arguments = {"duration": 0.4, "steps": 2}
    r = mesh.http.post(
        "/mcp", json=call(7, LONG_OP, arguments, {"progressToken": "t"}), headers=headers
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["mcp-session-id"] == headers["Mcp-Session-Id"]
    messages = sse_messages(r.text)
    progress = [m["params"] for m in messages if m.get("method") == "notifications/progress"]
    assert [(p["progressToken"], p["progress"]) for p in progress] == [("t", 1), ("t", 2)]
    assert messages[-1]["id"] == 7 and "result" in messages[-1]  # the result ends the stream
    # Without a progress token, nothing goes out before the result: JSON again.
    plain = mesh.http.post(
        "/mcp", json=call(8, LONG_OP, {"duration": 0.2, "steps": 2}), headers=headers
    )
    assert plain.headers["content-type"] == "application/json" and plain.json()["id"] == 8


def test_a_slow_call_becomes_a_stream_before_it_ends(mesh: Mesh) -> None:
    """Nothing to say for SSE_AFTER (1 s): headers go out, the answer follows on the stream (a
    client's read timeout never sees a silent response)."""
    headers = open_session(mesh)
    with mesh.http.stream(
        "POST", "/mcp", json=call(3, LONG_OP, {"duration": 2.5, "steps": 1}), headers=headers
    ) as r:
        started = time.monotonic()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert time.monotonic() - started > 0.5  # the headers came well before the result
    assert sse_messages(text)[-1]["id"] == 3


async def test_cancelled_by_the_agent(mesh: Mesh) -> None:
    headers = open_session(mesh)
    request = call(11, LONG_OP, {"duration": 20, "steps": 40}, {"progressToken": 1})
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as http:
        with anyio.fail_after(10):
            async with http.stream("POST", "/mcp", json=request, headers=headers) as r:
                lines = r.aiter_lines()
                async for line in lines:  # the first progress: the call runs upstream
                    if line.startswith("data: "):
                        break
                cancel = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": 11, "reason": "changed my mind"},
                }
                accepted = await http.post("/mcp", json=cancel, headers=headers)
                assert accepted.status_code == 202
                rest = [line async for line in lines]
    last = sse_messages("\n".join(rest))[-1]
    assert last == {
        "jsonrpc": "2.0",
        "id": 11,
        "error": {"code": -32800, "message": "Request cancelled"},
    }
    # The session goes on.
    r = mesh.http.post(
        "/mcp", json=call(12, "everything.echo", {"message": "after"}), headers=headers
    )
    assert r.json()["result"]["content"][0]["text"] == "Echo: after"


def test_edges_left_to_the_sdk_and_the_http_edge(mesh: Mesh) -> None:
    headers = open_session(mesh)
    garbage = mesh.http.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1,', headers=headers)
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700
    unknown = {**headers, "Mcp-Session-Id": "f" * 32}
    missing = mesh.http.post(
        "/mcp", json=call(1, "everything.echo", {"message": "x"}), headers=unknown
    )
    assert missing.status_code == 404
    stolen = {**headers, "Authorization": "Bearer agent:someone-else"}
    refused = mesh.http.post(
        "/mcp", json=call(1, "everything.echo", {"message": "x"}), headers=stolen
    )
    assert (
        refused.status_code == 403
        and "belongs to another agent" in refused.json()["error"]["message"]
    )
    # JSON-RPC batches are not part of MCP since 2025-06-18: refused whole, nothing runs.
    batch = [
        call(1, "everything.echo", {"message": "b1"}),
        call(2, "everything.echo", {"message": "b2"}),
    ]
    refused_batch = mesh.http.post("/mcp", json=batch, headers=headers)
    assert refused_batch.status_code == 400 and "error" in refused_batch.json()
    # A notification, and an answer to a question nobody asked: accepted, no body.
    note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    assert mesh.http.post("/mcp", json=note, headers=headers).status_code == 202
    stray = {"jsonrpc": "2.0", "id": "mesh-nobody", "result": {}}
    assert mesh.http.post("/mcp", json=stray, headers=headers).status_code == 202
    # Accept without SSE: the SDK's 406, not a fast-path answer.
    json_only = {**headers, "Accept": "application/json"}
    assert (
        mesh.http.post(
            "/mcp", json=call(3, "everything.echo", {"message": "x"}), headers=json_only
        ).status_code
        == 406
    )
    # A session ended by DELETE is gone for the fast path too.
    assert mesh.http.delete("/mcp", headers=headers).status_code == 200
    gone = mesh.http.post(
        "/mcp", json=call(4, "everything.echo", {"message": "x"}), headers=headers
    )
    assert gone.status_code == 404
    # ... and its agent's record too: any agent now hears 404, not "another agent's session".
    gone_for_all = mesh.http.post("/mcp", json=call(5, "everything.echo", {}), headers=stolen)
    assert gone_for_all.status_code == 404


async def test_sdk_client_sees_progress_and_results(mesh: Mesh) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with mesh.mcp("sdk") as client:
        results = await _concurrently(client, 20)
        assert results == [f"Echo: m{i}" for i in range(20)]
        await client.call_tool(
            LONG_OP, {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
        assert seen == [1, 2, 3]


async def _concurrently(client: Any, n: int) -> list[str]:
    results: list[str] = [""] * n

    async def one(i: int) -> None:
        result = await client.call_tool("everything.echo", {"message": f"m{i}"})
        results[i] = result.content[0].text

    async with anyio.create_task_group() as tasks:
        for i in range(n):
            tasks.start_soon(one, i)
    return results
