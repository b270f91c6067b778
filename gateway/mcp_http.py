"""MCP Streamable HTTP at `/mcp` (POST / GET / DELETE per the MCP transport spec), for remote and
cloud agents. The SDK's session manager does the transport, except for `tools/call` on an open
session (gateway/mcp_fast.py) and sessions that need nothing else (gateway/mcp_sessions.py: the
SDK's session is started only for what they don't answer); this module owns the HTTP edge:
agent identity from the bearer,
Origin/Host checks against DNS rebinding, and a session bound to the agent that opened it. Its
errors are JSON-RPC errors in JSON, like the SDK's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.frontend import FrontEnd
from gateway.http_edge import IdentityError, agent_from_authorization
from gateway.mcp_fast import FastPath
from gateway.mcp_forward import level_index
from gateway.mcp_messages import NotOneMessage
from gateway.mcp_sdk import connection, name_sessions, sdk_transport
from gateway.mcp_server import MeshMcp
from gateway.mcp_sessions import McpSession, Sessions, read_message

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def rpc_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}},
        status_code=status,
    )


class McpHttp:
    def __init__(self, frontend: FrontEnd) -> None:
        config = frontend.loaded.config
        self.allowed_origins = {f"http://{h}:{config.port}" for h in LOOPBACK} | set(
            config.allowed_origins
        )
        self.allowed_hosts = {f"{h}:{config.port}" for h in (*LOOPBACK, config.host)} | {
            urlsplit(origin).netloc for origin in config.allowed_origins
        }
        name_sessions(frontend.session_prefix)  # several gateway processes: gateway/peers.py
        self.mesh = MeshMcp(frontend, identify=self._identify)
        self.mesh.on_set_level = self._set_level
        self.server = self.mesh.build()
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=False,
            json_response=False,  # SSE: progress notifications stream before the result
            security_settings=TransportSecuritySettings(  # the SDK's own check, behind ours
                enable_dns_rebinding_protection=True,
                allowed_hosts=sorted(self.allowed_hosts),
                allowed_origins=sorted(self.allowed_origins),
            ),
        )
        self.endpoint = StreamableHTTPASGIApp(self.manager)
        self.fast = FastPath(self.mesh, self.manager)  # tools/call (gateway/mcp_fast.py)
        # By session id: whose, its log level, and whether the SDK's session runs for it.
        self.sessions = Sessions(self.mesh, self.server, self.manager, self.endpoint)
        self.sessions.prefix = frontend.session_prefix

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.manager.run():
            expiry = asyncio.create_task(self.sessions.expire(), name="mcp-session-expiry")
            try:
                yield
            finally:
                expiry.cancel()

    def _identify(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str, str]:
        request = ctx.request
        assert request is not None
        agent = agent_from_authorization(
            request.headers.get("authorization")
        )  # checked in __call__
        return agent, request.headers.get("mcp-session-id") or connection(
            ctx.session
        ).session_id or ""

    def _set_level(self, session: str, level: str) -> None:
        if (record := self.sessions.records.get(session)) is not None:
            record.log_level = level_index(level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A dict once (the first of repeated headers wins, as in Starlette's `Headers`).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        problem = self._check(scope["method"], headers)
        if problem is not None:
            await problem(scope, receive, send)
            return
        session_id = headers.get("mcp-session-id")
        session = self.sessions.get(session_id) if session_id is not None else None
        if session_id is not None and (session is None or self._ended(session_id, session)):
            await self._sdk(scope, receive, send)  # unknown or ended: the SDK's 404
            return
        try:
            message, receive = await read_message(
                scope, receive, headers, self.manager.max_request_body_size
            )
        except NotOneMessage as exc:
            await rpc_error(400, -32600, str(exc))(scope, receive, send)
            return
        if session_id is None or session is None:
            await self._open(scope, receive, send, headers, message)
            return
        if await self._answer(scope, send, headers, session_id, session, message):
            return
        if not session.sdk:  # what only the SDK answers: its session starts now
            refusal = await self.sessions.start_sdk(scope, session_id, session)
            if refusal is not None:
                await _pass_on(send, *refusal)
                return
        await self._sdk(scope, receive, send)

    async def _open(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Mapping[str, str],
        message: dict[str, Any] | None,
    ) -> None:
        """A request without a session: a plain initialize opens one held by the mesh; anything
        else is the SDK's (an initialize it takes opens one that is its own from the start)."""
        agent = agent_from_authorization(headers.get("authorization"))
        if message is not None and await self.sessions.initialize(send, message, agent):
            return

        async def bind_new_session(message: Any) -> None:
            # The session id is born in the initialize response: bind it to the agent that asked.
            if message["type"] == "http.response.start":
                session = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if session:
                    self.sessions.bind(session, agent)
            await send(message)

        await self._sdk(scope, receive, bind_new_session)

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        headers: Mapping[str, str],
        session_id: str,
        session: McpSession,
        message: dict[str, Any] | None,
    ) -> bool:
        """True: answered by the mesh (gateway/mcp_fast.py, gateway/mcp_sessions.py)."""
        session.last_seen = time.monotonic()
        if message is None:
            plain_delete = (
                scope["method"] == "DELETE"
                and "host" in headers
                and headers.get("mcp-protocol-version", "2025-03-26") in HANDSHAKE_PROTOCOL_VERSIONS
            )
            return plain_delete and await self.sessions.delete(send, session_id, session)
        if await self.fast.answer(send, headers, session_id, session, message):
            return True
        return await self.sessions.answer(send, session_id, session, message)

    def _ended(self, session_id: str, session: McpSession) -> bool:
        """The SDK's session of it is ending (idle timeout, terminated): the SDK answers."""
        if not session.sdk:
            return False
        transport = sdk_transport(self.manager, session_id)
        return (
            transport is None
            or transport.is_terminated
            or (transport.idle_scope is not None and transport.idle_scope.cancel_called)
        )

    async def _sdk(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The SDK answers, through a receive and send cut loose once it has: a session keeps its
        last message (and that message its request) while it waits for the next, and the request
        holds the whole HTTP connection (uvicorn's protocol, parser, buffers) after it closed."""
        links: list[Any] = [receive, send]

        async def receive_() -> Message:
            return await links[0]() if links else {"type": "http.disconnect"}

        async def send_(message: Message) -> None:
            if links:
                await links[1](message)

        try:
            await self.endpoint(scope, receive_, _json_refusals(send_))
        finally:
            links.clear()

    def _check(self, method: str, headers: Mapping[str, str]) -> JSONResponse | None:
        content_type = headers.get("content-type")
        if method == "POST" and not (content_type or "").lower().startswith("application/json"):
            got = f"not {content_type!r}" if content_type else "none given"
            # (the SDK checks it too, but answers in plain text)
            return rpc_error(415, -32600, f"Content-Type must be application/json ({got})")
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            return rpc_error(
                403, -32600, f"Origin {origin!r} is not allowed (add it to allowed_origins)"
            )
        host = headers.get("host")
        if host is not None and host not in self.allowed_hosts:
            return rpc_error(421, -32600, f"Host {host!r} is not allowed")
        try:
            agent = agent_from_authorization(headers.get("authorization"))
        except IdentityError as exc:
            return rpc_error(401, -32600, str(exc))
        session = headers.get("mcp-session-id")
        record = self.sessions.get(session) if session else None  # ended: forgotten
        owner = record.agent if record is not None else None
        if owner is not None and owner != agent:
            return rpc_error(403, -32600, f"session {session} belongs to another agent")
        return None


def _json_refusals(send: Send) -> Send:
    """The SDK answers a few refusals in plain text (`Request body too large`): passed on as
    JSON-RPC errors in JSON, as every other answer of the mesh."""
    held: list[Message] = []

    async def send_(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
            if not content_type.startswith(("application/json", "text/event-stream")):
                held.append(message)
                return
        if not held:
            await send(message)
            return
        held.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            status = held[0]["status"]
            text = b"".join(m.get("body", b"") for m in held[1:]).decode(errors="replace")
            body = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": text.strip() or HTTPStatus(status).phrase},
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

    return send_


async def _pass_on(send: Send, status: int, sent: list[Message]) -> None:
    """The SDK's refusal to start a session's machinery, answered as it said it."""
    if not sent:
        sent = [
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json")],
            },
            {
                "type": "http.response.body",
                "body": b'{"jsonrpc":"2.0","id":null,"error":'
                b'{"code":-32603,"message":"the session could not be resumed"}}',
            },
        ]
    for message in sent:
        await send(message)
