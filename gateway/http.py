"""The HTTP gateway: REST API of compat.md §3 on Starlette. Every answer is JSON, errors too.

Owns the HTTP edge only (parsing, identity, status codes); the call itself is `Pipeline`'s.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

import agent_mesh
from agent_mesh.config import LoadedConfig
from bus.errors import BusError
from bus.messages import APPROVAL, POLICY, TRACES, TraceQuery
from gateway.frontend import FrontEnd
from gateway.http_body import HttpError, read_json
from gateway.mcp_deferred import DeferredMcpHttp
from gateway.rest_tool import ToolRoute


TRACE_SETTLE = 2.0  # s a trace read waits for this gateway's own records to be stored


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter; a bad one is the caller's 400, naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"invalid query parameter {name}={raw!r}: expected an integer") from None
    if value < 0:
        raise HttpError(400, f"invalid query parameter {name}={raw!r}: expected 0 or more")
    return value


class Gateway(FrontEnd):
    """The routes, on the front-end's bus client, catalogue, trace outbox and pipeline."""

    def __init__(self, loaded: LoadedConfig, bus_endpoint: str, events_endpoint: str | None = None) -> None:
        super().__init__(loaded, bus_endpoint, events_endpoint)
        self.mcp_http = DeferredMcpHttp(self)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            async with self.mcp_http.lifespan():
                yield
        finally:
            await self.stop()

    # -- routes --------------------------------------------------------------------------------

    async def _trace_store(self, body: dict[str, Any]) -> Any:
        """One read of the trace store, after this gateway's own records are stored: a caller
        that got its answer finds its trace (read-your-writes, gateway/trace_outbox.py)."""
        await self.outbox.settled(TRACE_SETTLE)
        try:
            return await self.client.request(TRACES, body, timeout=5.0)
        except BusError as exc:
            raise HttpError(503, f"trace store unavailable: {exc.message}") from None

    # -- approvals and grants (supervisor protocol, compat.md §3 and §7) ----------------------

    async def _approval(self, body: dict[str, Any]) -> Any:
        """One request to the approval service; its BusError becomes the HTTP error it names."""
        try:
            return await self.client.request(APPROVAL, body, timeout=10.0)
        except BusError as exc:
            raise HttpError(exc.code if exc.code in (400, 404, 409) else 503, exc.message) from None

    def _operator(self, request: Request) -> None:
        token = self.loaded.config.auth.operator_token
        if token is None:
            return  # compatible default: no operator token configured
        given = request.headers.get("x-operator-token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HttpError(403, "operator token required: send X-Operator-Token (auth.operator_token)")

    async def approvals(self, request: Request) -> Response:
        q = request.query_params
        reply = await self._approval({"op": "list", "status": q.get("status") or None, "tool": q.get("tool"),
                                      "agent": q.get("agent"), "limit": int_param(request, "limit", 500)})
        return JSONResponse({"approvals": reply["approvals"], "count": len(reply["approvals"])})

    async def approval(self, request: Request) -> Response:
        reply = await self._approval({"op": "get", "id": request.path_params["id"]})
        approval = reply["approval"]
        try:
            recent = (await self._trace_store(TraceQuery(agent=approval["agent_id"], limit=10).dump()))["traces"]
        except HttpError:
            recent = []
        return JSONResponse({**approval, "recent_traces": recent, "active_grants": reply["active_grants"]})

    async def resolve(self, request: Request) -> Response:
        self._operator(request)
        body = await read_json(request.headers, request.receive)
        if not isinstance(body, dict):
            return error(400, "expected a JSON object {resolved_by, reasoning, confidence}")
        decision = request.path_params["decision"]
        if decision not in ("approve", "deny"):
            return error(404, f"no route {request.url.path} (approve or deny)")
        reply = await self._approval({
            "op": "resolve", "id": request.path_params["id"], "decision": decision,
            "resolved_by": body.get("resolved_by") or "human", "reasoning": body.get("reasoning"),
            "confidence": body.get("confidence"),
        })
        return JSONResponse({"approval": reply, "status": reply["status"]})

    async def grants(self, request: Request) -> Response:
        reply = await self._approval({"op": "grant_list", "agent": request.query_params.get("agent")})
        return JSONResponse(reply)

    async def create_grant(self, request: Request) -> Response:
        self._operator(request)
        body = await read_json(request.headers, request.receive)
        if not isinstance(body, dict) or not {"agent", "tools", "duration"} <= set(body):
            return error(400, 'expected {"agent": ..., "tools": [...], "duration": "30m"}')
        grant = await self._approval({"op": "grant_create", "agent": body["agent"], "tools": body["tools"],
                                      "duration": body["duration"], "created_by": body.get("created_by", "http")})
        return JSONResponse(grant, status_code=201)

    async def revoke_grant(self, request: Request) -> Response:
        self._operator(request)
        return JSONResponse(await self._approval({"op": "grant_revoke", "id": request.path_params["id"]}))

    async def tools(self, request: Request) -> Response:
        return JSONResponse({"tools": self.catalog.tools()})

    async def mcp_servers(self, request: Request) -> Response:
        servers = []
        for spec in self.loaded.config.mcp_servers:
            view = self.catalog.servers[spec.name]
            servers.append({
                "name": spec.name,
                "transport": spec.transport,
                "status": "up" if view.up else "down",
                "tools": len(view.tools),
                "workers": [
                    {k: w.get(k) for k in ("slot", "inflight", "served")} | {"pid": (w.get("meta") or {}).get("pid")}
                    for w in view.workers
                ],
                "configured_workers": spec.workers,
                "queued": view.queued,
            })
        return JSONResponse({"servers": servers})

    async def traces(self, request: Request) -> Response:
        q = request.query_params
        try:
            query = TraceQuery(agent=q.get("agent"), tool=q.get("tool"), session_id=q.get("session"),
                               limit=int_param(request, "limit", 100))
        except ValueError as exc:
            return error(400, f"invalid query: {exc}")
        reply = await self._trace_store(query.dump())
        return JSONResponse({"traces": reply["traces"], "count": len(reply["traces"])})

    async def sessions(self, request: Request) -> Response:
        reply = await self._trace_store({"op": "sessions", "limit": int_param(request, "limit", 100)})
        return JSONResponse(reply)

    async def session(self, request: Request) -> Response:
        """Every call of one session, oldest first."""
        reply = await self._trace_store(TraceQuery(session_id=request.path_params["id"], limit=10_000).dump())
        events = list(reversed(reply["traces"]))
        if not events:
            return error(404, f"no session {request.path_params['id']}")
        return JSONResponse({"session_id": request.path_params["id"], "events": events, "calls": len(events)})

    async def health(self, request: Request) -> Response:
        await self.catalog.refresh()
        upstreams = {name: ("up" if view.up else "down") for name, view in self.catalog.servers.items()}
        services = {name: self.catalog.service_summary(name) for name in (POLICY, TRACES, APPROVAL)}
        ok = self.catalog.bus_ok and all(s["workers"] for s in services.values()) and all(v == "up" for v in upstreams.values())
        body = {
            "status": "ok" if ok else "degraded",
            "bus": "up" if self.catalog.bus_ok else "down",
            "services": services,
            "upstreams": upstreams,
            "trace_backlog": self.outbox.backlog,
            "pid": os.getpid(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"name": "agent-mesh", "version": agent_mesh.__version__, "implementation": "python"})


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
    return error(exc.status_code, message.get(exc.status_code, str(exc.detail)))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error(500, f"internal error: {type(exc).__name__}: {exc}")


async def _tool_is_served_by_the_fast_path(request: Request) -> Response:
    raise AssertionError("POST /tool/... is answered by gateway.rest_tool.ToolRoute")


def create_app(loaded: LoadedConfig, bus_endpoint: str, events_endpoint: str | None = None) -> ASGIApp:
    gw = Gateway(loaded, bus_endpoint, events_endpoint)
    routes = [
        # Listed so that other methods get a JSON 405; POSTs never reach Starlette (rest_tool.py).
        Route("/tool/{tool:path}", _tool_is_served_by_the_fast_path, methods=["POST"]),
        Route("/tools", gw.tools, methods=["GET"]),
        Route("/mcp-servers", gw.mcp_servers, methods=["GET"]),
        Route("/traces", gw.traces, methods=["GET"]),
        Route("/sessions", gw.sessions, methods=["GET"]),
        Route("/sessions/{id}", gw.session, methods=["GET"]),
        Route("/health", gw.health, methods=["GET"]),
        Route("/version", gw.version, methods=["GET"]),
        Route("/approvals", gw.approvals, methods=["GET"]),
        Route("/approvals/{id}", gw.approval, methods=["GET"]),
        Route("/approvals/{id}/{decision:str}", gw.resolve, methods=["POST"]),
        Route("/grants", gw.grants, methods=["GET"]),
        Route("/grants", gw.create_grant, methods=["POST"]),
        Route("/grants/{id}", gw.revoke_grant, methods=["DELETE"]),
        Route("/mcp", gw.mcp_http),  # ASGI endpoint: POST, GET and DELETE per the MCP transport
    ]
    app = Starlette(
        routes=routes,
        lifespan=gw.lifespan,
        exception_handlers={HTTPException: _http_error, HttpError: _refused, Exception: _internal_error},
    )
    app.state.gateway = gw
    return ToolRoute(app, gw.pipeline)
