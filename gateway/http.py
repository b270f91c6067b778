"""The HTTP gateway: the REST API of compat.md §3 and MCP Streamable HTTP (`/mcp`) on Starlette,
in one process. Every answer is JSON, errors too.

Owns the HTTP edge only; the routes are grouped by what they serve (mesh_routes.py,
trace_routes.py, approval_routes.py) and described in one table (api.py); a tool call is
`Pipeline`'s, entered by the `/tool` fast path (http_edge.py) before Starlette.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway import api, last_resort
from gateway.api_route import starlette_routes
from gateway.approval_routes import ApprovalRoutes
from gateway.freeze_routes import FreezeRoutes
from gateway.frontend import FrontEnd
from gateway.http_edge import EdgeRoutes, HttpError, error
from gateway.last_resort import LastResort
from gateway.mcp_deferred import DeferredMcpHttp
from gateway.mesh_routes import MeshRoutes
from gateway.metrics_route import MetricsRoute
from gateway.operators import Operators
from gateway.peers import ForwardedReload, McpRoute, Peers, session_prefix
from gateway.policy_follower import PolicyFollower
from gateway.reload import Reloader
from gateway.trace_routes import TraceRoutes
from mesh_config.model import LoadedConfig
from observe.console import Console


class Gateway(FrontEnd):
    """The front-end of the HTTP process: it also holds the policy set in force (the reloader)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        bus_endpoint: str,
        events_endpoint: str | None = None,
        events_in: str | None = None,
        slot: int = 0,
    ) -> None:
        super().__init__(loaded, bus_endpoint, events_endpoint, events_in)
        self.slot, self.processes = slot, loaded.config.gateway.count
        # With several gateway processes (gateway/peers.py): process 0 holds the policy set,
        # the others follow it; a /mcp session's id names the process that holds it.
        self.peers = Peers(loaded.state_dir(), slot) if self.processes > 1 else None
        self.reloader: Reloader | ForwardedReload
        if self.peers is not None and slot != 0:
            assert isinstance(self.policy_set, PolicyFollower)
            self.reloader = ForwardedReload(self.peers, self.policy_set, loaded.state_dir())
        else:
            self.reloader = Reloader(loaded, bus_endpoint, events_in)
            self.policy_set = self.reloader  # this front-end holds the set in force
        if self.peers is not None:
            self.session_prefix = session_prefix(slot)
        self.mcp_http = DeferredMcpHttp(self)
        operators = Operators(loaded.config)
        self.traces = TraceRoutes(self.client, self.outbox)
        self.approvals = ApprovalRoutes(self.client, operators, self.traces)
        self.freezes = FreezeRoutes(self.client, operators)
        self.mesh = MeshRoutes(self, self.reloader, operators)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        if isinstance(self.reloader, Reloader):
            await self.reloader.start()
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[Any]] = set()

        def on_hup() -> None:  # `kill -HUP`, or `agent-mesh serve` passing its SIGHUP on
            if isinstance(self.reloader, ForwardedReload):  # to process 0, as a signal
                self.reloader.pass_signal()  # a local unix socket's connect: no wait
                return
            task = loop.create_task(self.reloader.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            async with self.mcp_http.lifespan():
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if isinstance(self.reloader, Reloader):
                await self.reloader.stop()
            await self.stop()
            if self.peers is not None:
                await self.peers.close()


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no route {request.url.path}",
        405: f"method {request.method} not allowed on {request.url.path}",
    }
    return JSONResponse(
        {"error": message.get(exc.status_code, str(exc.detail))},
        status_code=exc.status_code,
        headers=exc.headers,
    )  # 405: Allow, the methods the route takes (RFC 9110)


async def _tool_is_served_by_the_fast_path(request: Request, body: object) -> Response:
    # Listed so that other methods get a JSON 405; POSTs never reach Starlette (http_edge.py).
    raise AssertionError("POST /tool/... is answered by gateway.http_edge.EdgeRoutes")


def create_app(
    loaded: LoadedConfig,
    bus_endpoint: str,
    events_endpoint: str | None = None,
    events_in: str | None = None,
    *,
    slot: int = 0,
) -> EdgeRoutes:
    gw = Gateway(loaded, bus_endpoint, events_endpoint, events_in, slot)
    console = Console(gw)
    table = api.routes(
        api.Handlers(
            gw.mesh,
            gw.traces,
            gw.approvals,
            MetricsRoute(gw, gw.peers),
            console,
            _tool_is_served_by_the_fast_path,
            gw.freezes,
        )
    )
    described = {route.path for route in table}
    routes = starlette_routes(table)
    # The console's redirect (/ui/) and static files are not the API: served, not described.
    routes += [r for r in console.routes() if getattr(r, "path", None) not in described]
    # Several gateway processes: a session held by another is forwarded there (gateway/peers.py).
    mcp: ASGIApp = gw.mcp_http if gw.peers is None else McpRoute(gw.mcp_http, gw.peers)
    routes.append(Route("/mcp", mcp))  # ASGI endpoint: POST, GET and DELETE per the MCP transport
    app = Starlette(
        routes=routes,
        lifespan=gw.lifespan,
        exception_handlers={
            HTTPException: _http_error,
            HttpError: _refused,
            Exception: last_resort.handler,
        },
    )
    app.state.gateway = gw
    return EdgeRoutes(LastResort(app), gw.pipeline, mcp=LastResort(mcp))
