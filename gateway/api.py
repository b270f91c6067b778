"""The REST API, route by route: what each takes and answers (compat.md §3). The gateway's
routes and `GET /openapi.json` are both built from this table: add a route here, described.
What the answers look like (errors, a tool call's answers) is gateway/api_answers.py.

`/mcp` (MCP Streamable HTTP, JSON-RPC) is not in this table: the MCP specification is its
contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.api_answers import (
    DESCRIPTION,
    INTERNAL,
    TOOL_CALL_ANSWERS,
    error_answer,
)
from gateway.api_requests import (
    ToolCallBody,
)
from gateway.api_route import Answer, ApiRoute, Handler
from gateway.mesh_routes import VERSION
from gateway.openapi import document

if TYPE_CHECKING:
    from gateway.approval_routes import ApprovalRoutes
    from gateway.freeze_routes import FreezeRoutes
    from gateway.mesh_routes import MeshRoutes
    from gateway.metrics_route import MetricsRoute
    from gateway.trace_routes import TraceRoutes
    from observe.console import Console


@dataclass(frozen=True)
class Handlers:
    """What the table's routes call: the route groups the gateway holds (gateway/http.py)."""

    mesh: MeshRoutes
    traces: TraceRoutes
    approvals: ApprovalRoutes
    metrics: MetricsRoute
    console: Console
    tool_call: Handler  # POST /tool/... is answered before Starlette (gateway/http_edge.py)
    freezes: FreezeRoutes


def routes(handlers: Handlers) -> list[ApiRoute]:
    console = handlers.console
    table = [
        ApiRoute(
            "POST",
            "/tool/{tool:path}",
            handlers.tool_call,
            "Call a tool, governed",
            TOOL_CALL_ANSWERS,
            body=ToolCallBody,
            body_example={"params": {"path": "/tmp/mesh-demo"}},
            tags=["calls"],
            bearer=True,
            path_params={
                "tool": {
                    "type": "string",
                    "minLength": 1,
                    "examples": ["filesystem.read_file"],
                    "description": "<server>.<tool>",
                }
            },
            description="Identity from the bearer; `X-Session-Id`, `X-Trace-Id` or `traceparent` "
            "are recorded; `X-Callback-URL` gets the approval result. The trace id is also in "
            "the `X-Trace-Id` header. Every answer, refusals included, has this shape.",
        ),
        *handlers.mesh.catalog_routes(),
        *handlers.traces.routes(),
        *handlers.approvals.routes(),
        *handlers.freezes.routes(),
        *handlers.mesh.operation_routes(),
        ApiRoute(
            "GET",
            "/metrics",
            handlers.metrics.handle,
            "Prometheus metrics of the whole tree",
            {
                200: Answer(str, "Prometheus text format.", media_type="text/plain"),
                404: error_answer(
                    "Metrics are off in the config.", "metrics are off in this mesh's config"
                ),
            },
            tags=["operations"],
        ),
        ApiRoute(
            "GET",
            "/ui",
            console.page,
            "The web console (HTML)",
            {
                200: Answer(
                    str,
                    "The console page; it reads and acts through this API.",
                    media_type="text/html",
                ),
            },
            tags=["console"],
        ),
        ApiRoute(
            "GET",
            "/ui/events",
            console.events,
            "Trace records as they are stored (server-sent events)",
            {
                200: Answer(
                    str,
                    "`event: trace`, `data:` a trace record as JSON; the stream stays open.",
                    media_type="text/event-stream",
                ),
            },
            tags=["console"],
        ),
    ]
    spec: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        """This document, generated from the routes' own models (gateway/api.py)."""
        if not spec:
            spec.update(document(table, version=VERSION, description=DESCRIPTION))
        return JSONResponse(spec)

    table.append(
        ApiRoute(
            "GET",
            "/openapi.json",
            openapi,
            "The OpenAPI 3.1 document of this API",
            {200: Answer(dict[str, Any], "OpenAPI 3.1."), 500: INTERNAL},
            tags=["operations"],
        )
    )
    return table
