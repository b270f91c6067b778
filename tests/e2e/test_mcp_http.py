"""MCP Streamable HTTP at /mcp with the official SDK client, plus REST on the same mesh (config 5),
and the HTTP edge's failure paths (bad Origin, bad auth, missing session id, garbage JSON-RPC, a
batch)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, text_of, wait_until


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    config = {
        "allowed_origins": ["https://agents.example.com"],
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]},
            {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]},
        ],
        "policies": [
            {
                "name": "cloud",
                "agent": "cloud-*",
                "rules": [
                    {"tools": ["everything.get-env"], "action": "deny"},
                    {"tools": ["*"], "action": "allow"},
                ],
            },
            {"name": "default", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        m.demo = demo  # type: ignore[attr-defined]
        yield m


async def test_list_call_deny_progress_over_http(mesh: Mesh) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with mesh.mcp("cloud-1") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"everything.echo", "fs.read_text_file", "mesh.catalog"} <= names
        echo = await client.call_tool("everything.echo", {"message": "over http"})
        assert text_of(echo) == "Echo: over http"
        image = await client.call_tool("everything.get-tiny-image", {})
        assert any(c.type == "image" and c.mime_type == "image/png" for c in image.content)
        structured = await client.call_tool(
            "everything.get-structured-content", {"location": "New York"}
        )
        assert (
            structured.structured_content is not None
            and "temperature" in structured.structured_content
        )
        denied = await client.call_tool("everything.get-env", {})
        assert denied.is_error and "denied by policy cloud" in text_of(denied)
        text = await client.call_tool("fs.read_text_file", {"path": str(mesh.demo / "a.txt")})  # type: ignore[attr-defined]
        assert text_of(text) == "alpha"
        await client.call_tool(
            "everything.trigger-long-running-operation",
            {"duration": 0.6, "steps": 2},
            progress_callback=on_progress,
        )
        assert seen == [1, 2]
        with pytest.raises(MCPError):
            await client.call_tool("nosuch.tool", {})


async def test_rest_and_mcp_agents_share_one_mesh(mesh: Mesh) -> None:
    async with mesh.mcp("cloud-7") as client:
        await client.call_tool("everything.echo", {"message": "from mcp"})
    r = mesh.call("everything.echo", {"message": "from rest"}, agent="cloud-8")
    assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "Echo: from rest"

    def agents() -> set[str]:
        return {
            t["agent_id"]
            for t in mesh.http.get("/traces", params={"tool": "everything.echo"}).json()
        }

    wait_until(lambda: {"cloud-7", "cloud-8"} <= agents(), 5, "both agents in one trace store")
    mcp_trace = mesh.http.get("/traces", params={"agent": "cloud-7"}).json()[0]
    assert len(mcp_trace["session_id"]) == 32  # the MCP session id is recorded


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"Origin": "http://evil.example"}, 403, "Origin 'http://evil.example' is not allowed"),
        ({"Authorization": "Token abc"}, 401, "Bearer agent:<id>"),
        ({"Host": "rebind.example:80"}, 421, "Host 'rebind.example:80' is not allowed"),
    ],
)
def test_edge_refusals_are_json_rpc_errors(
    mesh: Mesh, headers: dict[str, str], status: int, needle: str
) -> None:
    r = mesh.http.post("/mcp", json=INIT, headers={**MCP_HEADERS, **headers})
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_allowed_origin_missing_session_and_garbage(mesh: Mesh) -> None:
    ok = mesh.http.post(
        "/mcp", json=INIT, headers={**MCP_HEADERS, "Origin": "https://agents.example.com"}
    )
    assert ok.status_code == 200 and ok.headers["mcp-session-id"]
    no_session = mesh.http.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=MCP_HEADERS
    )
    assert (
        no_session.status_code == 400 and "session" in no_session.json()["error"]["message"].lower()
    )
    garbage = mesh.http.post(
        "/mcp",
        content=b"{not json",
        headers={**MCP_HEADERS, "mcp-session-id": ok.headers["mcp-session-id"]},
    )
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700
    # Someone else's session id is refused.
    stolen = mesh.http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        headers={
            **MCP_HEADERS,
            "mcp-session-id": ok.headers["mcp-session-id"],
            "Authorization": "Bearer agent:cloud-evil",
        },
    )
    assert stolen.status_code == 403
    assert "belongs to another agent" in stolen.json()["error"]["message"]
    # The mesh keeps serving.
    assert mesh.http.get("/health").status_code == 200


BATCH = "batch requests are not supported: send one JSON-RPC message per POST"


def test_a_batch_or_a_body_that_is_no_message_is_one_json_rpc_error(mesh: Mesh) -> None:
    """Not the SDK's pydantic validation text: one -32600 naming the mistake, before a session,
    on a session the mesh holds and on one the SDK's machinery serves; the session goes on."""
    refused = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": BATCH}}
    before = mesh.http.post("/mcp", content=b"[]", headers=MCP_HEADERS)
    assert (before.status_code, before.json()) == (400, refused)
    opened = mesh.http.post("/mcp", json=INIT, headers=MCP_HEADERS)
    session = {**MCP_HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    for held in ("by the mesh", "by the SDK"):
        if held == "by the SDK":  # resources/list starts the SDK's session
            started = mesh.http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 3, "method": "resources/list"},
                headers=session,
            )
            assert started.status_code == 200, started.text
        batch = mesh.http.post("/mcp", content=json.dumps([listing]), headers=session)
        assert (batch.status_code, batch.json()) == (400, refused), held
        number = mesh.http.post("/mcp", content=b"42", headers=session)
        assert number.json()["error"] == {
            "code": -32600,
            "message": "the body must be one JSON-RPC 2.0 message (an object), not a number",
        }
        old = mesh.http.post("/mcp", json={**listing, "jsonrpc": "1.0"}, headers=session)
        assert (
            old.json()["error"]["message"] == 'not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"'
        )
        listed = mesh.http.post("/mcp", json=listing, headers=session)
        assert listed.status_code == 200 and "everything." in listed.text, held


def test_refusals_before_a_session_are_json_rpc_errors_too(mesh: Mesh) -> None:
    # curl -d sends application/x-www-form-urlencoded: named, in JSON, not the SDK's plain text.
    form = mesh.http.post(
        "/mcp",
        content=json.dumps(INIT),
        headers={**MCP_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert form.json()["error"] == {
        "code": -32600,
        "message": "Content-Type must be application/json "
        "(not 'application/x-www-form-urlencoded')",
    }
    missing = mesh.http.post(
        "/mcp", content=json.dumps(INIT), headers={"Accept": MCP_HEADERS["Accept"]}
    )
    assert missing.status_code == 415
    assert (
        missing.json()["error"]["message"] == "Content-Type must be application/json (none given)"
    )
    # Over the SDK's body limit (4 MiB): its 413, as a JSON-RPC error.
    huge = json.dumps(INIT).replace('"raw"', json.dumps("x" * (5 << 20)))
    too_large = mesh.http.post("/mcp", content=huge, headers=MCP_HEADERS)
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "application/json"
    assert too_large.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Request body too large"},
    }
    assert mesh.http.get("/health").status_code == 200


async def test_connect_relays_stdio_to_the_mesh(mesh: Mesh) -> None:
    import os
    import sys

    from mcp import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        env=dict(os.environ),
        args=["-m", "agent_mesh", "connect", "--url", mesh.url, "--agent", "cloud-relay"],
    )
    async with Client(params, mode="legacy") as client:
        assert "everything.echo" in {t.name for t in (await client.list_tools()).tools}
        echo = await client.call_tool("everything.echo", {"message": "relayed"})
        assert text_of(echo) == "Echo: relayed"
        denied = await client.call_tool("everything.get-env", {})
        assert denied.is_error and "policy cloud" in text_of(denied)
    wait_until(
        lambda: len(mesh.http.get("/traces", params={"agent": "cloud-relay"}).json()) == 2,
        5,
        "the relayed calls traced under the relay's agent id",
    )
