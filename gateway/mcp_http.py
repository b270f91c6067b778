"""MCP Streamable HTTP at `/mcp` (POST / GET / DELETE per the MCP transport spec), for remote and
cloud agents. The SDK's session manager does the transport, except for `tools/call` on an open
session (gateway/mcp_fast.py); this module owns the HTTP edge: agent identity from the bearer,
Origin/Host checks against DNS rebinding, and a session bound to the agent that opened it. Its
errors are JSON-RPC errors in JSON, like the SDK's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.frontend import FrontEnd
from gateway.http_edge import IdentityError, agent_from_authorization
from gateway.mcp_fast import FastPath, McpSession
from gateway.mcp_forward import level_index
from gateway.mcp_sdk import connection, name_sessions
from gateway.mcp_server import MeshMcp

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
        self.sessions: dict[str, McpSession] = {}  # by session id: whose, and its log level

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    def _identify(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str, str]:
        request = ctx.request
        assert request is not None
        agent = agent_from_authorization(
            request.headers.get("authorization")
        )  # checked in __call__
        return agent, request.headers.get("mcp-session-id") or connection(
            ctx.session
        ).session_id or ""

    def _bind(self, session: str, agent: str) -> None:
        if len(self.sessions) >= 100_000:  # bounded: forget the oldest binding
            del self.sessions[next(iter(self.sessions))]
        self.sessions[session] = McpSession(agent)

    def _set_level(self, session: str, level: str) -> None:
        if (record := self.sessions.get(session)) is not None:
            record.log_level = level_index(level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A dict once (the first of repeated headers wins, as in Starlette's `Headers`).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        problem = self._check(headers)
        if problem is not None:
            await problem(scope, receive, send)
            return
        if "mcp-session-id" in headers:
            session_id = headers["mcp-session-id"]
            session = self.sessions.get(session_id)
            if session is not None and session_id not in self.manager._server_instances:
                del self.sessions[session_id]  # ended (DELETE, idle): the SDK answers 404
            elif session is not None:
                replay = await self.fast(scope, receive, send, headers, session)
                if replay is None:
                    return
                receive = replay
            await self._sdk(scope, receive, send)
            return
        agent = agent_from_authorization(headers.get("authorization"))

        async def bind_new_session(message: Any) -> None:
            # The session id is born in the initialize response: bind it to the agent that asked.
            if message["type"] == "http.response.start":
                session = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if session:
                    self._bind(session, agent)
            await send(message)

        await self._sdk(scope, receive, bind_new_session)

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
            await self.endpoint(scope, receive_, send_)
        finally:
            links.clear()

    def _check(self, headers: Mapping[str, str]) -> JSONResponse | None:
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
        record = self.sessions.get(session) if session else None
        owner = record.agent if record is not None else None
        if owner is not None and owner != agent:
            return rpc_error(403, -32600, f"session {session} belongs to another agent")
        return None
