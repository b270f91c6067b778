"""`/mcp` sessions the mesh holds itself, and the SDK's session started only when one needs it.

The SDK's session (gateway/mcp_http.py) is a transport, memory streams, a task group and the
lowlevel server's task, ~38 KB per session while it waits. Most sessions only ever initialize,
list tools and call them, which the mesh answers without it (calls: gateway/mcp_fast.py). So a
session opened by a plain `initialize` POST is a `McpSession` record (its agent, the initialize
params as the client sent them, its log level, when it was last used: < 1 KB), answered here:

- `initialize` (the SDK's own result, built by its runner: gateway/mcp_sdk.py), `ping`,
  `tools/list`, notifications (`notifications/initialized`; the others have no handler in the
  mesh) and responses nobody waits for (202), `DELETE` (the session ends: 404 from then on);
- anything else (resources, prompts, completion, `logging/setLevel`, the GET stream, a body or
  headers the SDK would refuse) first starts the SDK's session under the same id, initialized by
  replaying the recorded `initialize` and `notifications/initialized` through the SDK's own
  transport, then hands the request to it. From then on the session is the SDK's, as before.

Sessions the mesh holds expire as the SDK's do (no request for `session_idle_timeout`, none in
flight); the number open is bounded by the SDK's `max_sessions` (503 beyond, as the SDK says).
A session without the SDK's machinery has no GET stream, so nothing it would be sent is lost:
the SDK drops standalone notifications (list_changed) for a session with no GET stream and no
event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson
import pydantic_core
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.mcp_messages import NotOneMessage, message_problem
from gateway.mcp_sdk import initialize_answer, sdk_session_named, sdk_transport
from gateway.mcp_server import MeshMcp

RequestId = int | str
Refusal = tuple[int, list[Message]]  # an HTTP answer of the SDK, as it sent it
SWEEP_EVERY = 60.0  # s between looks for expired sessions (at most the idle timeout)
_INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


class McpSession:
    """What the mesh keeps per /mcp session, by session id (plain data)."""

    __slots__ = ("agent", "busy", "init", "last_seen", "log_level", "sdk")

    def __init__(self, agent: str, init: bytes = b"", sdk: bool = False) -> None:
        self.agent = agent
        self.init = init  # the initialize params, JSON as sent (replayed to start the SDK's)
        self.sdk = sdk  # the SDK's session runs (the session is its from then on)
        self.log_level = 0  # index in mcp_forward.LOG_LEVELS (logging/setLevel)
        self.busy = 0  # calls in flight (they hold the session against expiry)
        self.last_seen = time.monotonic()


class Sessions:
    def __init__(
        self,
        mesh: MeshMcp,
        server: Server[Any],
        manager: StreamableHTTPSessionManager,
        sdk: ASGIApp,
    ) -> None:
        self.mesh = mesh
        self.server = server
        self.manager = manager
        self.sdk = sdk  # the SDK's endpoint, as is (the synthetic requests that start a session)
        self.prefix = ""  # of new session ids (gateway/peers.py)
        self.records: dict[str, McpSession] = {}
        self.opening: dict[str, asyncio.Future[Refusal | None]] = {}  # SDK sessions being started

    def get(self, session_id: str) -> McpSession | None:
        """The session's record; None (and forgotten) once the SDK's session of it ended."""
        record = self.records.get(session_id)
        if (
            record is not None
            and record.sdk
            and sdk_transport(self.manager, session_id) is None
            and session_id not in self.opening
        ):
            del self.records[session_id]  # ended (DELETE, idle): the SDK answers 404
            return None
        return record

    def bind(self, session_id: str, agent: str) -> None:
        """A session the SDK opened (an initialize it answered): the SDK's from the start."""
        self.records[session_id] = McpSession(agent, sdk=True)

    # -- answered by the mesh ----------------------------------------------------------------

    async def initialize(self, send: Send, message: Mapping[str, Any], agent: str) -> bool:
        """A plain `initialize` POST: a new session the mesh holds. False: the SDK answers."""
        rid, params = message.get("id"), message.get("params")
        if message.get("method") != "initialize" or not is_id(rid) or not isinstance(params, dict):
            return False
        result = initialize_answer(self.server, params)
        if result is None:
            return False  # params the SDK refuses: its error
        limit = self.manager.max_sessions
        if limit is not None and len(self.records) >= limit:
            self.sweep()
            if len(self.records) >= limit:
                error = {"code": -32603, "message": "Too many open sessions"}
                await send_json(send, 503, {"jsonrpc": "2.0", "id": None, "error": error}, None)
                return True
        session_id = self.prefix + uuid.uuid4().hex
        self.records[session_id] = McpSession(agent, orjson.dumps(params))
        await send_sse(send, {"jsonrpc": "2.0", "id": rid, "result": result}, session_id)
        return True

    async def answer(
        self, send: Send, session_id: str, record: McpSession, message: Mapping[str, Any]
    ) -> bool:
        """What a session without the SDK's machinery answers itself. False: start the SDK's."""
        if record.sdk:
            return False
        method, rid, params = message.get("method"), message.get("id"), message.get("params")
        if params is not None and not isinstance(params, dict):
            return False
        if isinstance(method, str) and "id" not in message:
            await accepted(send, session_id)  # a notification: none has a handler here
            return True
        if method is None and is_id(rid) and ("result" in message or "error" in message):
            await accepted(send, session_id)  # an answer to no question of ours
            return True
        if method == "ping" and is_id(rid):
            result: dict[str, Any] = {}
        elif method == "tools/list" and is_id(rid):
            result = {"tools": self.mesh.tools()}
        else:
            return False
        await send_sse(send, {"jsonrpc": "2.0", "id": rid, "result": result}, session_id)
        return True

    async def delete(self, send: Send, session_id: str, record: McpSession) -> bool:
        """DELETE of a session the mesh holds: ended, 200 (as the SDK answers)."""
        if record.sdk:
            return False
        self.records.pop(session_id, None)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return True

    # -- the SDK's session, started when needed ----------------------------------------------

    async def start_sdk(self, scope: Scope, session_id: str, record: McpSession) -> Refusal | None:
        """Start the SDK's session of `record` (once, however many requests ask at the same time).
        None: started; else the SDK's refusal (e.g. 503 at its session limit), to pass on."""
        if record.sdk:
            return None
        if (pending := self.opening.get(session_id)) is not None:
            return await asyncio.shield(pending)
        pending = asyncio.get_running_loop().create_future()
        self.opening[session_id] = pending
        refusal: Refusal | None = (500, [])
        try:
            refusal = await self._replay_handshake(scope, session_id, record)
            record.sdk = refusal is None
            return refusal
        finally:
            pending.set_result(refusal)
            del self.opening[session_id]

    async def _replay_handshake(
        self, scope: Scope, session_id: str, record: McpSession
    ) -> Refusal | None:
        """The recorded initialize, then notifications/initialized, through the SDK's transport:
        its session is then exactly the one a client would have opened (its answers dropped)."""
        initialize = b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":' + record.init + b"}"
        with sdk_session_named(session_id):
            status, sent = await self._internal(scope, initialize, session_id=None)
        if status != 200:
            return status, sent
        status, sent = await self._internal(scope, _INITIALIZED, session_id=session_id)
        return None if status == 202 else (status, sent)

    async def _internal(
        self, scope: Scope, body: bytes, session_id: str | None
    ) -> tuple[int, list[Message]]:
        keep = {b"host", b"authorization"}  # no protocol version: the handshake's era
        headers = [(k, v) for k, v in scope["headers"] if k in keep] + [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-length", str(len(body)).encode()),
        ]
        if session_id is not None:
            headers.append((b"mcp-session-id", session_id.encode()))
        inner = {**scope, "method": "POST", "headers": headers, "query_string": b""}
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[Message] = []
        status = 0

        async def receive() -> Message:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            sent.append(message)

        await self.sdk(inner, receive, send)
        return status, sent

    # -- expiry ------------------------------------------------------------------------------

    async def expire(self) -> None:
        """Forever: sessions the mesh holds end after the SDK's idle timeout without a request
        (the SDK's own sessions have its timer)."""
        timeout = self.manager.session_idle_timeout
        if timeout is None:
            return
        while True:
            await asyncio.sleep(min(SWEEP_EVERY, timeout))
            self.sweep()

    def sweep(self) -> None:
        timeout = self.manager.session_idle_timeout
        since = time.monotonic() - (timeout if timeout is not None else float("inf"))
        for session_id, record in list(self.records.items()):
            if record.sdk:
                self.get(session_id)  # forgotten if the SDK's session ended
            elif not record.busy and record.last_seen < since:
                del self.records[session_id]


@contextlib.contextmanager
def in_flight(record: McpSession) -> Any:
    """A request in flight holds its session against expiry."""
    record.busy += 1
    try:
        yield
    finally:
        record.busy -= 1
        record.last_seen = time.monotonic()


async def read_message(
    scope: Scope, receive: Receive, headers: Mapping[str, str], limit: int
) -> tuple[dict[str, Any] | None, Receive]:
    """A POST the SDK would take (its headers, a body its parser reads), parsed: a JSON-RPC
    message the mesh may answer. None: the SDK answers, reading the body from the receive.
    NotOneMessage: JSON, but not one JSON-RPC message (a batch `[]`, a number...)."""
    if (
        scope["method"] != "POST"
        or "host" not in headers  # the SDK refuses its absence (421)
        or headers.get("mcp-protocol-version", "2025-03-26") not in HANDSHAKE_PROTOCOL_VERSIONS
        or headers.get("content-type", "").split(";")[0].strip() != "application/json"
        or not _accepts_json_and_sse(headers.get("accept", ""))
    ):
        return None, receive
    body, replay = await _read_body(receive, limit)
    if body is None:  # too large (the SDK's 413), or the client left
        return None, replay
    try:  # the SDK's parser: what it refuses (-32700), it answers
        message = pydantic_core.from_json(body)
    except ValueError:
        return None, replay
    if (problem := message_problem(message)) is not None:
        raise NotOneMessage(problem)
    return message, replay


def is_id(value: object) -> TypeGuard[RequestId]:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _accepts_json_and_sse(accept: str) -> bool:
    """As the SDK's check_accept_headers (wildcards included)."""
    types_ = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "*/*" in types_:
        return True
    return bool(types_ & {"application/json", "application/*"}) and bool(
        types_ & {"text/event-stream", "text/*"}
    )


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The whole body (None if over `limit`, or the client left), and a receive that replays what
    was read for the SDK."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            break
    last = messages[-1]
    whole = last["type"] == "http.request" and not last.get("more_body", False) and size <= limit
    body = b"".join(m.get("body", b"") for m in messages) if whole else None

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return body, replay


async def send_json(send: Send, status: int, message: Any, session_id: str | None) -> None:
    body = orjson.dumps(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_sse(send: Send, message: Any, session_id: str) -> None:
    """One answer as the SDK's transport sends it: an SSE stream of that one event."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache, no-transform"),
                (b"x-accel-buffering", b"no"),
                (b"mcp-session-id", session_id.encode()),
            ],
        }
    )
    event = b"event: message\r\ndata: " + orjson.dumps(message) + b"\r\n\r\n"
    await send({"type": "http.response.body", "body": event})


async def accepted(send: Send, session_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"0"),
                (b"mcp-session-id", session_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
