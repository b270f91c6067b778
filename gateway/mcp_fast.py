"""The `/mcp` fast path: a `tools/call` on an open session, answered on plain ASGI.

The SDK's session manager serves every request of a session through memory streams, a task
group, its dispatcher and an SSE response (gateway/mcp_http.py); for the request agents make most
— `tools/call` — that machinery cost three times the governed call itself. Here that request goes
straight to `MeshMcp.call_tool` and its answer is chosen by what comes first (Streamable HTTP lets
a server answer a POST with one JSON body or an SSE stream):

- the result → one `application/json` body;
- a progress or log notification, or a question for the agent (sampling, elicitation) → an SSE
  stream from then on, the result its last event;
- nothing for SSE_AFTER seconds (a slow tool, a call waiting for a human) → an SSE stream too,
  with a comment every PING_EVERY seconds, so clients' read timeouts hold as with the SDK.

What the fast path does not own it leaves to gateway/mcp_sessions.py and the SDK, the body
replayed: every other method, batches, bad JSON (-32700), unknown or ended sessions (404), odd
headers (406, 415), protocol revisions without the initialize handshake. It answers itself two
messages that concern its own requests: `notifications/cancelled` for a call it runs (the call
is cancelled, its POST answered -32800 like the SDK's), and the agent's response to a question
it asked (passed to the upstream).

State: each session's agent and log level live in its `McpSession` (gateway/mcp_sessions.py),
plain data keyed by session id; a call holds the session against expiry (the mesh's, and the
SDK's idle timer when its transport runs). A session lives in one process: several gateway
processes route a session's requests by its id (affinity, gateway/peers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from mcp.server.streamable_http import REQUEST_CANCELLED, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.types import Message, Send

from gateway.mcp_forward import Caller
from gateway.mcp_sdk import sdk_transport
from gateway.mcp_server import MeshMcp
from gateway.mcp_sessions import McpSession, RequestId, accepted, in_flight, is_id

log = logging.getLogger(__name__)

SSE_AFTER = 1.0  # s a call may run with nothing to say before its answer becomes an SSE stream
PING_EVERY = 15.0  # s between SSE comments while a call runs (the SDK's sse-starlette pings so)


class FastPath:
    def __init__(self, mesh: MeshMcp, manager: StreamableHTTPSessionManager) -> None:
        self.mesh = mesh
        self.manager = manager
        self.calls: dict[tuple[str, RequestId], asyncio.Task[dict[str, Any]]] = {}  # running
        self.asks: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}  # our question ids

    async def answer(
        self,
        send: Send,
        headers: Mapping[str, str],
        session_id: str,
        session: McpSession,
        message: Mapping[str, Any],
    ) -> bool:
        """True: `message` (a POST's, read by mcp_sessions.read_message) is answered here."""
        method, rid, params = message.get("method"), message.get("id"), message.get("params")
        if method == "tools/call" and is_id(rid) and isinstance(params, dict):
            if (session_id, rid) not in self.calls:
                await self._call(send, session_id, session, rid, params, headers)
                return True
        elif method is None and isinstance(rid, str) and rid in self.asks:
            owner, future = self.asks[rid]  # the agent's answer to a question of ours
            if owner == session_id and not future.done():
                future.set_result(dict(message))
                await accepted(send, session_id)
                return True
        elif method == "notifications/cancelled" and "id" not in message:
            target = params.get("requestId") if isinstance(params, dict) else None
            call = self.calls.get((session_id, target)) if is_id(target) else None
            if call is not None:
                call.cancel()
                await accepted(send, session_id)
                return True
        return False

    async def _call(
        self,
        send: Send,
        session_id: str,
        session: McpSession,
        rid: RequestId,
        params: dict[str, Any],
        headers: Mapping[str, str],
    ) -> None:
        response = _Response(send, session_id, self)
        caller = Caller(
            session.agent,
            session_id,
            params,
            response,
            session.log_level,
            headers.get("traceparent"),
        )
        key = (session_id, rid)
        call = asyncio.ensure_future(self._answer(caller, params))
        self.calls[key] = call
        timer = asyncio.get_running_loop().call_later(SSE_AFTER, response.keep_alive)
        try:
            with in_flight(session), _holding(sdk_transport(self.manager, session_id)):
                try:
                    answer = await call
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not call.cancelled() or task is not None and task.cancelling():
                        call.cancel()  # we are cancelled (shutdown), not the call by its client
                        raise
                    answer = {"error": {"code": REQUEST_CANCELLED, "message": "Request cancelled"}}
        finally:
            timer.cancel()
            response.stop_pings()
            if self.calls.get(key) is call:
                del self.calls[key]
        await response.finish({"jsonrpc": "2.0", "id": rid, **answer})

    async def _answer(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON-RPC answer's `result` or `error` (as the SDK's dispatcher words it)."""
        try:
            return {"result": await self.mesh.tools_call(caller, params)}
        except MCPError as exc:
            return {"error": exc.error.model_dump(by_alias=True, exclude_none=True)}
        except Exception as exc:  # the SDK's dispatcher answers code 0 too
            log.exception("tools/call failed")
            return {"error": {"code": 0, "message": str(exc)}}


class _Response:
    """One fast-path POST's answer, and the `Outlet` of its call: JSON until something must go out
    before the result, then an SSE stream."""

    def __init__(self, send: Send, session_id: str, fast: FastPath) -> None:
        self.send = send
        self.session_id = session_id
        self.fast = fast
        self.started = False  # the SSE stream's headers sent
        self.lock = asyncio.Lock()
        self.pings: asyncio.Task[None] | None = None

    async def progress(self, params: dict[str, Any]) -> None:
        await self._event({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def log(self, params: dict[str, Any]) -> None:
        await self._event({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = f"mesh-{uuid.uuid4().hex}"  # never an SDK id (ints): its answer comes back to us
        future = asyncio.get_running_loop().create_future()
        self.fast.asks[rid] = (self.session_id, future)
        try:
            await self._event({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            answer = await future
        finally:
            del self.fast.asks[rid]
        error = answer.get("error")
        if isinstance(error, dict):
            raise MCPError(int(error.get("code", -32603)), str(error.get("message", "")))
        result = answer.get("result")
        if not isinstance(result, dict):
            raise MCPError(-32603, f"{method}: the agent's answer has no result")
        return result

    def keep_alive(self) -> None:
        """SSE_AFTER passed without an answer: open the stream, ping it until the answer."""
        self.pings = asyncio.create_task(self._ping())

    def stop_pings(self) -> None:
        if self.pings is not None:
            self.pings.cancel()

    async def _ping(self) -> None:
        comment = b""
        while True:
            async with self.lock:
                if not self.started:
                    await self._start()
                elif comment:
                    await self._body(comment, more=True)
            await asyncio.sleep(PING_EVERY)
            comment = b": ping\r\n\r\n"

    async def _event(self, message: dict[str, Any]) -> None:
        async with self.lock:
            if not self.started:
                await self._start()
            await self._body(_sse(message), more=True)

    async def finish(self, message: dict[str, Any]) -> None:
        async with self.lock:
            if self.started:
                await self._body(_sse(message), more=False)
                return
            body = orjson.dumps(message)
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"mcp-session-id", self.session_id.encode()),
                    ],
                }
            )
            await self._body(body, more=False)

    async def _start(self) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"),
                    (b"mcp-session-id", self.session_id.encode()),
                ],
            }
        )

    async def _body(self, body: bytes, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def _send(self, message: Message) -> None:
        with contextlib.suppress(OSError):  # the client went away: the call still completes
            await self.send(message)


def _sse(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + orjson.dumps(message) + b"\r\n\r\n"


@contextlib.contextmanager
def _holding(transport: StreamableHTTPServerTransport | None) -> Iterator[None]:
    """A request in flight holds the SDK's session (if it runs) against its idle timeout, as
    `StreamableHTTPServerTransport.handle_request` does (its private counters: mcp 2.x)."""
    idle = transport.idle_scope if transport is not None else None
    timeout = transport._idle_timeout if transport is not None else None
    if transport is None or idle is None or timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    idle.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            idle.deadline = asyncio.get_running_loop().time() + timeout
