"""Sessions the mesh holds (gateway/mcp_sessions.py), against a stand-in for the SDK's endpoint:
initialize answered as the SDK would, the session limit, expiry, and the SDK's session started
once (the recorded handshake replayed under the session's id) however many requests need it."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from mcp.server import Server
from mcp.server import streamable_http_manager as manager_module
from starlette.types import Message, Receive, Scope, Send

from gateway.mcp_sdk import name_sessions
from gateway.mcp_sessions import McpSession, Sessions, in_flight

PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"},
}
SCOPE: Scope = {
    "type": "http",
    "method": "POST",
    "path": "/mcp",
    "headers": [(b"host", b"127.0.0.1:1"), (b"authorization", b"Bearer agent:a")],
}


class FakeSdk:
    """The SDK's endpoint as the handshake replay sees it: 200 to initialize (the session named
    as the SDK's uuid4 says), 202 to notifications/initialized; or `refuse` for everything."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str | None, Any]] = []  # (method, session header, params)
        self.named: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads((await receive())["body"])
        headers = dict(scope["headers"])
        session = headers.get(b"mcp-session-id")
        self.seen.append((body["method"], session and session.decode(), body.get("params")))
        await asyncio.sleep(0.01)  # let concurrent requests pile up
        if self.refuse is not None:
            status = self.refuse
        elif body["method"] == "initialize":
            self.named.append(manager_module.uuid4().hex)  # type: ignore[attr-defined]
            status = 200
        else:
            status = 202
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def sessions(sdk: FakeSdk | None = None, **manager: Any) -> Sessions:
    fake_manager = SimpleNamespace(
        max_sessions=manager.get("max_sessions", 10),
        session_idle_timeout=manager.get("session_idle_timeout", 60.0),
        _server_instances={},
    )
    mesh = SimpleNamespace(tools=lambda: [{"name": "t.echo"}])
    server: Server[Any] = Server("agent-mesh", version="9")
    return Sessions(mesh, server, fake_manager, sdk or FakeSdk())  # type: ignore[arg-type]


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.messages[0]["headers"]).get(name)

    def answer(self) -> Any:
        body: bytes = self.messages[1]["body"]
        if body.startswith(b"event: message"):
            body = body.split(b"data: ", 1)[1]
        return json.loads(body)


async def test_initialize_is_answered_as_the_sdk_would_and_recorded() -> None:
    table = sessions()
    table.prefix = "g1-"
    sent = Sent()
    message = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": PARAMS}
    assert await table.initialize(sent, message, "a")
    session_id = (sent.header(b"mcp-session-id") or b"").decode()
    assert sent.status == 200 and session_id.startswith("g1-")
    assert sent.header(b"content-type") == b"text/event-stream"
    answer = sent.answer()
    assert answer["id"] == 7 and answer["result"]["protocolVersion"] == "2025-06-18"
    assert answer["result"]["serverInfo"]["name"] == "agent-mesh"
    record = table.records[session_id]
    assert record.agent == "a" and not record.sdk and json.loads(record.init) == PARAMS


async def test_initialize_the_sdk_refuses_is_left_to_it() -> None:
    table = sessions()
    bad = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    assert not await table.initialize(Sent(), bad, "a")
    assert not table.records


async def test_at_the_session_limit_a_new_one_is_503() -> None:
    table = sessions(max_sessions=1)
    message = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": PARAMS}
    assert await table.initialize(Sent(), message, "a")
    refused = Sent()
    assert await table.initialize(refused, message, "b")
    assert (
        refused.status == 503 and refused.answer()["error"]["message"] == "Too many open sessions"
    )
    assert len(table.records) == 1


async def test_ping_tools_list_and_notifications_answered_without_the_sdk() -> None:
    sdk = FakeSdk()
    table = sessions(sdk)
    record = McpSession("a", json.dumps(PARAMS).encode())
    answers = []
    cases: list[tuple[dict[str, Any], int]] = [
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, 202),
        ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, 200),
        ({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, 200),
        ({"jsonrpc": "2.0", "id": "x", "result": {}}, 202),
    ]
    for message, status in cases:
        sent = Sent()
        assert await table.answer(sent, "s", record, message)
        assert sent.status == status
        answers.append(sent.answer() if status == 200 else None)
    assert answers[1] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert answers[2] == {"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "t.echo"}]}}
    resources = {"jsonrpc": "2.0", "id": 3, "method": "resources/list"}
    assert not await table.answer(Sent(), "s", record, resources)  # the SDK's
    bad_params = {"jsonrpc": "2.0", "id": 4, "method": "ping", "params": [1]}
    assert not await table.answer(Sent(), "s", record, bad_params)  # the SDK's error
    assert not sdk.seen


async def test_the_sdk_session_starts_once_under_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manager_module, "uuid4", manager_module.uuid4)  # type: ignore[attr-defined]
    name_sessions("g0-")
    sdk = FakeSdk()
    table = sessions(sdk)
    record = McpSession("a", json.dumps(PARAMS).encode())
    table.records["g0-abc"] = record
    refusals = await asyncio.gather(*(table.start_sdk(SCOPE, "g0-abc", record) for _ in range(5)))
    assert refusals == [None] * 5 and record.sdk
    assert [(m, s) for m, s, _ in sdk.seen] == [
        ("initialize", None),
        ("notifications/initialized", "g0-abc"),
    ]
    assert sdk.seen[0][2] == PARAMS and sdk.named == ["g0-abc"]
    assert manager_module.uuid4().hex.startswith("g0-")  # type: ignore[attr-defined]
    assert manager_module.uuid4().hex != "g0-abc"  # type: ignore[attr-defined]


async def test_a_refusal_to_start_is_passed_on_and_the_session_stays_the_meshs() -> None:
    table = sessions(FakeSdk(refuse=503))
    record = McpSession("a", json.dumps(PARAMS).encode())
    refusal = await table.start_sdk(SCOPE, "s", record)
    assert refusal is not None and refusal[0] == 503 and not record.sdk and not table.opening


async def test_expiry_spares_busy_sessions_and_forgets_ended_sdk_ones() -> None:
    table = sessions(session_idle_timeout=5.0)
    old = time.monotonic() - 10
    idle, busy, fresh = McpSession("a"), McpSession("b"), McpSession("c")
    ended, running = McpSession("d", sdk=True), McpSession("e", sdk=True)
    idle.last_seen = busy.last_seen = ended.last_seen = running.last_seen = old
    table.records.update(idle=idle, busy=busy, fresh=fresh, ended=ended, running=running)
    table.manager._server_instances["running"] = object()  # type: ignore[assignment]
    with in_flight(busy):
        table.sweep()
    assert set(table.records) == {"busy", "fresh", "running"}
    assert busy.last_seen > old  # a call's end counts as use
