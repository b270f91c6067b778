"""/mcp sessions the mesh holds itself (gateway/mcp_sessions.py) over raw HTTP and the SDK client:
opened, pinged, listed and called without the SDK's machinery; then whatever only the SDK
answers (resources, prompts, logging/setLevel, the GET stream) on the same session, which the
SDK takes over without the client noticing; DELETE ends it; another agent cannot use it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, text_of

# logging/setLevel is deprecated at 2026-07-28; the handshake-era clients we serve still send it.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = {
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]}
        ],
        "policies": [{"name": "p", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


def answer_of(response: httpx.Response) -> Any:
    """The JSON-RPC answer of a POST, whether one JSON body or an SSE stream."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        return json.loads(events[-1])
    return response.json()


def rpc(rid: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


def open_session(mesh: Mesh, agent: str) -> tuple[dict[str, str], Any]:
    headers = {**HEADERS, "Authorization": f"Bearer agent:{agent}"}
    init = rpc(
        0,
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    )
    r = mesh.http.post("/mcp", json=init, headers=headers)
    result = answer_of(r)["result"]
    headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert mesh.http.post("/mcp", json=initialized, headers=headers).status_code == 202
    return headers, result


def test_a_session_held_by_the_mesh_then_taken_over_by_the_sdk(mesh: Mesh) -> None:
    headers, init = open_session(mesh, "lazy")
    assert init["protocolVersion"] == "2025-11-25" and init["serverInfo"]["name"] == "agent-mesh"
    caps = init["capabilities"]
    assert caps["tools"]["listChanged"] and "resources" in caps and "prompts" in caps

    def post(body: dict[str, Any]) -> httpx.Response:
        return mesh.http.post("/mcp", json=body, headers=headers)

    assert answer_of(post(rpc(1, "ping"))) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    names = {tool["name"] for tool in answer_of(post(rpc(2, "tools/list")))["result"]["tools"]}
    assert "everything.echo" in names
    echo = rpc(3, "tools/call", {"name": "everything.echo", "arguments": {"message": "a"}})
    assert answer_of(post(echo))["result"]["content"][0]["text"] == "Echo: a"
    # Only the SDK answers these: its session starts, initialized as the client initialized it.
    assert post(rpc(4, "logging/setLevel", {"level": "error"})).status_code == 200
    resources = answer_of(post(rpc(5, "resources/list")))["result"]["resources"]
    assert resources and all("uri" in r for r in resources)
    prompt = rpc(6, "prompts/get", {"name": "everything.simple-prompt", "arguments": {}})
    assert answer_of(post(prompt))["result"]["messages"]
    # ... and the session keeps working as before, through the fast path and the SDK.
    echo["id"] = 7
    assert answer_of(post(echo))["result"]["content"][0]["text"] == "Echo: a"
    assert "everything.echo" in str(answer_of(post(rpc(8, "tools/list"))))
    bad = post({"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {}})
    assert "error" in answer_of(bad)


def test_first_requests_for_the_sdk_at_once_start_it_once(mesh: Mesh) -> None:
    headers, _ = open_session(mesh, "lazy-many")

    async def all_at_once() -> list[Any]:
        async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
            posts = [
                client.post("/mcp", json=rpc(i, "resources/list"), headers=headers)
                for i in range(6)
            ]
            return [answer_of(r) for r in await asyncio.gather(*posts)]

    answers = asyncio.run(all_at_once())
    assert sorted(a["id"] for a in answers) == list(range(6))
    assert all(a["result"]["resources"] for a in answers)


def test_a_get_stream_on_a_session_held_by_the_mesh(mesh: Mesh) -> None:
    headers, _ = open_session(mesh, "lazy-get")
    get_headers = {k: v for k, v in headers.items() if k != "Content-Type"}
    get_headers["Accept"] = "text/event-stream"
    with mesh.http.stream("GET", "/mcp", headers=get_headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")


def test_delete_ends_a_session_held_by_the_mesh(mesh: Mesh) -> None:
    headers, _ = open_session(mesh, "lazy-end")
    stolen = {**headers, "Authorization": "Bearer agent:someone-else"}
    refused = mesh.http.post("/mcp", json=rpc(1, "tools/list"), headers=stolen)
    assert refused.status_code == 403 and "belongs to another agent" in refused.text
    assert mesh.http.delete("/mcp", headers=stolen).status_code == 403
    assert mesh.http.delete("/mcp", headers=headers).status_code == 200
    assert mesh.http.post("/mcp", json=rpc(2, "tools/list"), headers=headers).status_code == 404
    assert mesh.http.post("/mcp", json=rpc(3, "ping"), headers=stolen).status_code == 404


async def test_sdk_client_on_a_session_the_mesh_opened(mesh: Mesh) -> None:
    async with mesh.mcp("lazy-sdk") as client:
        assert "everything.echo" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("everything.echo", {"message": "hi"})
        assert text_of(result) == "Echo: hi"
        await client.set_logging_level("debug")
        resources = (await client.list_resources()).resources
        read = await client.read_resource(resources[0].uri)
        assert read.contents
        prompt = await client.get_prompt("everything.simple-prompt", {})
        assert prompt.messages
        result = await client.call_tool("everything.echo", {"message": "again"})
        assert text_of(result) == "Echo: again"
