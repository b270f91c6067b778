"""The HTTP gateway: REST API of compat.md §3 on Starlette. Every answer is JSON, errors too.

Owns the HTTP edge only (parsing, identity, status codes); the call itself is `Pipeline`'s.
Shapes are the Go project's (`proxy/handler.go`): lists are bare arrays, objects are built by
gateway/api_views.py; our extra detail rides along as extra fields.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bus.errors import BusError, service_status, unavailable_service
from bus.messages import (
    APPROVAL,
    POLICY,
    TRACES,
    ApprovalGet,
    ApprovalList,
    ApprovalResolve,
    Body,
    GrantCreate,
    GrantList,
    GrantRevoke,
    TraceQuery,
)
from gateway import api, last_resort
from gateway.api_requests import (
    ApprovalsQuery,
    GrantBody,
    GrantsQuery,
    Limited,
    OtelTracesQuery,
    ResolveBody,
    TracesQuery,
)
from gateway.api_route import starlette_routes
from gateway.api_views import grant_globs, grant_view, server_view, tool_view
from gateway.frontend import FrontEnd
from gateway.http_body import HttpError
from gateway.identity import IdentityError, claimed_agent
from gateway.last_resort import LastResort
from gateway.mcp_deferred import DeferredMcpHttp
from gateway.metrics_route import MetricsRoute
from gateway.origins import allowed_origins
from gateway.reload import Reloader
from gateway.rest_tool import ToolRoute
from mesh_config.model import LoadedConfig
from observe.console import Console
from policy.approval_view import approval_view
from policy.globs import glob_matches

VERSION = version("agent-mesh")  # as installed, from pyproject.toml

TRACE_SETTLE = 2.0  # s a trace read waits for this gateway's own records to be stored


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _caller(request: Request) -> str:
    """Who resolved or granted when the body does not say: Go's "http:<remote address>"."""
    client = request.client
    return f"http:{client.host}:{client.port}" if client else "http"


class Gateway(FrontEnd):
    """The routes, on the front-end's bus client, catalogue, trace outbox and pipeline."""

    def __init__(
        self,
        loaded: LoadedConfig,
        bus_endpoint: str,
        events_endpoint: str | None = None,
        events_in: str | None = None,
    ) -> None:
        super().__init__(loaded, bus_endpoint, events_endpoint)
        self.reloader = Reloader(loaded, bus_endpoint, events_in)
        self.policy_set = self.reloader  # this front-end holds the set in force
        self.mcp_http = DeferredMcpHttp(self)
        self.origins = allowed_origins(loaded.config)  # browsers' state-changing requests

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        await self.reloader.start()
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[Any]] = set()

        def on_hup() -> None:  # `kill -HUP`, or `agent-mesh serve` passing its SIGHUP on
            task = loop.create_task(self.reloader.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            async with self.mcp_http.lifespan():
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await self.reloader.stop()
            await self.stop()

    async def reload(self, request: Request) -> Response:
        """`mesh reload`: read the config and its policy_dir again (operator route). 200 with the
        set in force (`status` reloaded | unchanged), 422 when the new config is invalid (the old
        set stays; `error` says why)."""
        agent = self._operator(request)
        if agent is not None:
            return error(
                403,
                f"agent {agent} cannot reload the mesh's policies; an operator can "
                "(without an agent's bearer)",
            )
        answer = await self.reloader.reload("mesh reload")
        return JSONResponse(answer, status_code=422 if answer["status"] == "invalid" else 200)

    # -- routes --------------------------------------------------------------------------------

    async def _trace_store(self, body: dict[str, Any]) -> Any:
        """One read of the trace store, after this gateway's own records are stored: a caller
        that got its answer finds its trace (read-your-writes, gateway/trace_outbox.py)."""
        await self.outbox.settled(TRACE_SETTLE)
        try:
            return await self.client.request(TRACES, body, timeout=5.0)
        except BusError as exc:
            raise HttpError(503, unavailable_service("trace store", exc)) from None

    # -- approvals and grants (supervisor protocol, compat.md §3 and §7) ----------------------

    async def _approval(self, op: type[Body], **fields: Any) -> Any:
        """One request to the approval service, built as its typed message (a field of the wrong
        type is the caller's 400); its BusError becomes the HTTP error the error map names."""
        try:
            body = op(**fields).dump()
        except ValidationError as exc:
            error = exc.errors()[0]
            raise HttpError(
                400, f"invalid {'.'.join(map(str, error['loc']))}: {error['msg']}"
            ) from None
        try:
            return await self.client.request(APPROVAL, body, timeout=10.0)
        except BusError as exc:
            raise HttpError(service_status(exc.code), exc.message) from None

    def _operator(self, request: Request) -> str | None:
        """Check an operator route. With `auth.operator_token` the caller must send it: None after
        that (an operator). Without one, the agent the caller says it is (its bearer), if any: an
        agent may not approve its own call nor grant itself tools. A browser's request from
        another site (its `Origin` not the mesh's own nor in `allowed_origins`) is refused first:
        a page elsewhere must not approve through an operator's browser (the console, /ui)."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins:
            raise HttpError(
                403,
                f"Origin {origin!r} is not allowed to change anything here "
                "(add it to allowed_origins)",
            )
        token = self.loaded.config.auth.operator_token
        if token is None:
            try:  # None: no identity claimed, a human at the mesh CLI, a script (Go's behaviour)
                return claimed_agent(request.headers.get("authorization"))
            except IdentityError as exc:
                raise HttpError(401, str(exc)) from None
        given = request.headers.get("x-operator-token")
        if not given:
            raise HttpError(
                403,
                "operator token required: send X-Operator-Token (this mesh has "
                "auth.operator_token; the mesh CLI sends $MESH_OPERATOR_TOKEN)",
            )
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HttpError(
                403, "wrong operator token: X-Operator-Token does not match auth.operator_token"
            )
        return None

    async def approvals(self, request: Request, query: ApprovalsQuery) -> Response:
        reply = await self._approval(
            ApprovalList,
            status=query.status or None,
            tool=query.tool or None,
            agent=query.agent or None,
            limit=query.limit_or(500),
        )
        now = time.time()
        return JSONResponse([approval_view(a, now) for a in reply["approvals"]])

    async def approval(self, request: Request) -> Response:
        reply = await self._approval(ApprovalGet, id=request.path_params["id"])
        approval = reply["approval"]
        try:
            recent = (
                await self._trace_store(TraceQuery(agent=approval["agent_id"], limit=10).dump())
            )["traces"]
        except HttpError:
            recent = []
        now = time.time()
        return JSONResponse(
            {
                **approval_view(approval, now),
                "recent_traces": recent,
                "active_grants": [grant_view(g, now) for g in reply["active_grants"]],
            }
        )

    async def resolve(self, request: Request, body: ResolveBody) -> Response:
        """`resolved_by` defaults to the caller's address, as in Go."""
        agent = self._operator(request)
        decision = request.path_params["decision"]
        if decision not in ("approve", "deny"):
            return error(404, f"no route {request.url.path} (approve or deny)")
        reply = await self._approval(
            ApprovalResolve,
            id=request.path_params["id"],
            decision=decision,
            resolved_by=body.resolved_by or _caller(request),
            reasoning=body.reasoning,
            confidence=body.confidence,
            agent=agent,
        )
        # Go: {"status", "id"}; the whole approval beside them.
        return JSONResponse(
            {
                "status": reply["status"],
                "id": reply["id"],
                "approval": approval_view(reply, time.time()),
            }
        )

    async def grants(self, request: Request, query: GrantsQuery) -> Response:
        reply = await self._approval(GrantList, agent=query.agent or None)
        now = time.time()
        return JSONResponse([grant_view(g, now) for g in reply["grants"]])

    async def create_grant(self, request: Request, body: GrantBody) -> Response:
        """`tools`: a glob, globs joined by ",", or a list; `duration` a Go duration (30m, 2h)."""
        agent = self._operator(request)
        if agent is not None and glob_matches(body.agent, agent):
            return error(
                403,
                f"agent {agent} cannot grant itself tools (grant for {body.agent!r}); "
                "an operator creates grants without the agent's bearer",
            )
        globs = grant_globs(body.tools)
        if globs is None:
            return error(
                400,
                'invalid body.tools: a tool glob ("filesystem.*"), globs joined by ",", '
                "or a list of globs",
            )
        grant = await self._approval(
            GrantCreate,
            agent=body.agent,
            tools=globs,
            duration=body.duration,
            created_by=body.created_by or _caller(request),
        )
        return JSONResponse(grant_view(grant, time.time()), status_code=201)

    async def revoke_grant(self, request: Request) -> Response:
        self._operator(request)
        grant = await self._approval(
            GrantRevoke, id=request.path_params["id"], revoked_by=_caller(request)
        )
        return JSONResponse(
            {"status": "revoked", "id": grant["id"], "grant": grant_view(grant, time.time())}
        )

    async def tools(self, request: Request) -> Response:
        return JSONResponse([tool_view(t) for t in self.catalog.tools()])

    async def mcp_servers(self, request: Request) -> Response:
        servers = []
        for spec in self.loaded.config.sources():  # transport: stdio, sse, ..., cli or openapi
            view = self.catalog.servers[spec.name]
            servers.append(
                server_view(
                    spec.name,
                    spec.transport,
                    [view.canonical(t) for t in view.tools],
                    view.up,
                    {
                        "workers": [
                            {k: w.get(k) for k in ("slot", "inflight", "served")}
                            | {"pid": (w.get("meta") or {}).get("pid")}
                            for w in view.workers
                        ],
                        "configured_workers": spec.workers,
                        "queued": view.queued,
                        **({"error": view.reason} if view.reason else {}),
                    },
                )
            )
        return JSONResponse(servers)

    async def traces(self, request: Request, query: TracesQuery) -> Response:
        store = TraceQuery(
            agent=query.agent or None,
            tool=query.tool or None,
            session_id=query.session or None,
            limit=query.limit_or(100),
        )
        return JSONResponse((await self._trace_store(store.dump()))["traces"])

    async def otel_traces(self, request: Request, query: OtelTracesQuery) -> Response:
        """Go's `/otel-traces`: the recent calls (`agent`, `tool`, `limit`, default 200) as one
        OTLP/JSON export, with a child span per step of each call (observe/otlp_json.py)."""
        store = TraceQuery(
            agent=query.agent or None, tool=query.tool or None, limit=query.limit_or(200)
        )
        from observe.otlp_json import otlp_traces  # not at start: a restarted gateway serves sooner

        return JSONResponse(otlp_traces((await self._trace_store(store.dump()))["traces"]))

    async def sessions(self, request: Request, query: Limited) -> Response:
        return JSONResponse(
            (await self._trace_store({"op": "sessions", "limit": query.limit_or(50)}))["sessions"]
        )

    async def session(self, request: Request, query: Limited) -> Response:
        """The calls of one session, newest first (Go: an unknown session is an empty list)."""
        store = TraceQuery(session_id=request.path_params["id"], limit=query.limit_or(200))
        return JSONResponse((await self._trace_store(store.dump()))["traces"])

    async def _status(self) -> tuple[bool, dict[str, Any]]:
        """Whether every role and upstream is up, and the detail of each."""
        await self.catalog.refresh()
        upstreams = {
            name: ("up" if view.up else "down") for name, view in self.catalog.servers.items()
        }
        # Why each down upstream is down, as its workers said (workers/upstream_down.py).
        errors = {name: view.reason for name, view in self.catalog.servers.items() if view.reason}
        services = {name: self.catalog.service_summary(name) for name in (POLICY, TRACES, APPROVAL)}
        ok = (
            self.catalog.bus_ok
            and all(s["workers"] for s in services.values())
            and all(v == "up" for v in upstreams.values())
        )
        return ok, {
            "bus": "up" if self.catalog.bus_ok else "down",
            "services": services,
            "upstreams": upstreams,
            **({"upstream_errors": errors} if errors else {}),
            "trace_backlog": self.outbox.backlog,
            "internal_errors": last_resort.internal_errors(),
            "pid": os.getpid(),
        }

    async def health(self, request: Request) -> Response:
        """Go's {status, tools, traces, version}: 200 whenever the gateway answers."""
        ok, detail = await self._status()
        try:
            stats = await self.client.request(TRACES, {"op": "stats"}, timeout=2.0)
        except BusError:
            stats, ok = {}, False
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "tools": len(self.catalog.tools()),
                "traces": stats,
                "version": VERSION,
                **detail,
                "policy_set": self.reloader.view(),
            }
        )

    async def ready(self, request: Request) -> Response:
        """Readiness for probes and waiters: 200 when every role and upstream is up, else 503."""
        ok, detail = await self._status()
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **detail}, status_code=200 if ok else 503
        )

    async def version(self, request: Request) -> Response:
        return JSONResponse(
            {
                "version": VERSION,
                "commit": "none",
                "date": "unknown",
                "name": "agent-mesh",
                "implementation": "python",
            }
        )


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
    # Listed so that other methods get a JSON 405; POSTs never reach Starlette (rest_tool.py).
    raise AssertionError("POST /tool/... is answered by gateway.rest_tool.ToolRoute")


def create_app(
    loaded: LoadedConfig,
    bus_endpoint: str,
    events_endpoint: str | None = None,
    events_in: str | None = None,
) -> ASGIApp:
    gw = Gateway(loaded, bus_endpoint, events_endpoint, events_in)
    console = Console(gw)
    table = api.routes(gw, MetricsRoute(gw), console, _tool_is_served_by_the_fast_path)
    described = {route.path for route in table}
    routes = starlette_routes(table)
    # The console's redirect (/ui/) and static files are not the API: served, not described.
    routes += [r for r in console.routes() if getattr(r, "path", None) not in described]
    routes.append(
        Route("/mcp", gw.mcp_http)
    )  # ASGI endpoint: POST, GET and DELETE per the MCP transport
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
    return ToolRoute(LastResort(app), gw.pipeline)
