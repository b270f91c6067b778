"""Several gateway processes (gateway/peers.py): which process a session id names, a request
for another's session relayed over that process's unix socket (a real uvicorn there, its
streamed answer passed on chunk by chunk), and a 404 when that process is gone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from bus.state_dir import StateDir
from gateway.peers import McpRoute, Peers, owner_of, session_prefix


def test_owner_of_reads_the_prefix_only() -> None:
    assert owner_of(session_prefix(3) + "abc") == 3
    assert owner_of("g12-0f") == 12
    for other in ("0123abcd", "g-1", "gx-1", "x1-1", ""):
        assert owner_of(other) is None


async def _owner(scope: Scope, receive: Receive, send: Send) -> None:
    """Process 1's /mcp: an SSE answer in two chunks that says what it got."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    seen = {"method": scope["method"], "body": body.decode(), "session": headers["mcp-session-id"]}
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"x-owner", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": f"data: {json.dumps(seen)}\n\n".encode()})


async def _local(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("a session of process 1 must not be served by process 0")


def _front(tmp_path: Path) -> tuple[httpx.AsyncClient, Peers]:
    peers = Peers(tmp_path, slot=0)
    route = McpRoute(_local, peers)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=route), base_url="http://gw")
    return client, peers


async def test_another_process_session_is_relayed_there(tmp_path: Path) -> None:
    sock = StateDir(tmp_path).gateway_sock(1)
    server = uvicorn.Server(uvicorn.Config(_owner, uds=str(sock), log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        client, peers = _front(tmp_path)
        async with client:
            answer = await client.post(
                "/mcp", content=b'{"jsonrpc": "2.0"}', headers={"mcp-session-id": "g1-abc"}
            )
        await peers.close()
        assert answer.status_code == 200 and answer.headers["x-owner"] == "1"
        first, second = [e for e in answer.text.split("\n\n") if e]
        assert first == "data: first"
        seen: dict[str, Any] = json.loads(second.removeprefix("data: "))
        assert seen == {"method": "POST", "body": '{"jsonrpc": "2.0"}', "session": "g1-abc"}
        assert peers.forwarded == 1
    finally:
        server.should_exit = True
        await serving


async def test_a_gone_process_session_is_not_found(tmp_path: Path) -> None:
    client, peers = _front(tmp_path)  # nobody listens on gateway-2.sock
    async with client:
        answer = await client.post("/mcp", content=b"{}", headers={"mcp-session-id": "g2-abc"})
    await peers.close()
    assert answer.status_code == 404
    assert "start a new session" in answer.json()["error"]["message"]
