"""The REST API, route by route: what each takes and answers (compat.md §3). The gateway's
routes and `GET /openapi.json` are both built from this table: add a route here, described.

`/mcp` (MCP Streamable HTTP, JSON-RPC) is not in this table: the MCP specification is its
contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import agent_mesh
from bus.messages import TraceRecord
from gateway import api_shapes as shapes
from gateway.api_requests import (
    ApprovalsQuery,
    GrantBody,
    GrantsQuery,
    Limited,
    OtelTracesQuery,
    ResolveBody,
    ToolCallBody,
    TracesQuery,
)
from gateway.api_route import Answer, ApiRoute
from gateway.openapi import document

if TYPE_CHECKING:
    from gateway.http import Gateway
    from gateway.metrics_route import MetricsRoute
    from observe.console import Console

DESCRIPTION = """Governance gateway between AI agents and MCP tools: every call is identified,
limited, decided by policy (allow, deny, human approval), forwarded to its upstream and traced.
Answers are the Go agent-mesh's shapes (lists are bare arrays, times RFC 3339, optional fields
absent); every answer, errors included, is JSON. A bad query parameter or body field is a 400
naming it. MCP clients use `/mcp` (Streamable HTTP), described by the MCP specification."""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ID = {
    "type": "string",
    "minLength": 4,
    "description": "The id, or a unique prefix of 4 or more characters.",
    "examples": ["1a2b3c4d"],
}
TIME = "2026-12-02T00:52:15.123456Z"


def _link(operation_id: str, pointer: str) -> dict[str, dict[str, Any]]:
    """An OpenAPI link: the `id` of `operation_id` is this answer's value at `pointer`."""
    return {
        operation_id: {
            "operationId": operation_id,
            "parameters": {"id": f"$response.body#{pointer}"},
        }
    }


def _error(description: str, example: str) -> Answer:
    return Answer(shapes.Error, description, {"error": example})


BAD_QUERY = _error(
    "A query parameter is not what it should be (named).",
    "invalid query parameter limit='abc': expected a valid integer",
)
BAD_BODY = _error(
    "The body is not JSON, or a field is not what it should be (named).",
    "invalid body.duration: expected a valid string",
)
TOO_LARGE = _error("The body is over 1 MiB.", "request body too large: limit is 1048576 bytes")
INTERNAL = Answer(
    shapes.InternalError,
    "A fault of the mesh, logged with this trace id.",
    {"error": "internal error", "trace_id": TRACE_ID},
)
TRACES_DOWN = _error(
    "The trace store did not answer.", "trace store unavailable: traces: deadline exceeded"
)
APPROVALS_DOWN = _error("The approval service did not answer.", "approval: deadline exceeded")
NOT_AN_AGENT = _error(
    "Authorization is not `Bearer agent:<id>`.",
    "Authorization header must be "
    "'Bearer agent:<id>' (id: 1-128 of letters, digits and . _ : @ / + -)",
)
NOT_AN_OPERATOR = _error(
    "Operator token missing or wrong, or an agent acting on its own behalf.",
    "operator token required: send X-Operator-Token",
)

CALL_EXAMPLE = {
    "trace_id": TRACE_ID,
    "policy": "allow",
    "latency_ms": 12,
    "result": {"content": [{"type": "text", "text": "[FILE] hello.txt"}]},
}


def _call(description: str, policy: str, error: str) -> Answer:
    return Answer(
        shapes.ToolCallResponse,
        description,
        {
            "trace_id": TRACE_ID,
            "policy": policy,
            "latency_ms": 0 if policy == "error" else 3,
            "error": error,
        },
    )


TOOL_CALL_ANSWERS = {
    200: Answer(
        shapes.ToolCallResponse,
        "Called: the upstream's result (an MCP CallToolResult; "
        "`isError` inside it is the tool's own failure).",
        CALL_EXAMPLE,
    ),
    400: _call(
        "Bad JSON, `params` not an object, or a value the upstream could not be given "
        "unchanged (named by its path).",
        "error",
        "invalid params.n: number out of range (no 64-bit float holds it; Infinity is not JSON)",
    ),
    401: _call(
        "Authorization is not `Bearer agent:<id>`.",
        "error",
        "Authorization header must be 'Bearer agent:<id>'",
    ),
    403: _call(
        "Denied by policy, or by a human.",
        "deny",
        "denied by policy claude: rule 2 (filesystem.*: deny)",
    ),
    404: _call(
        "No such tool (not traced).", "error", "unknown tool fs.nope: fs has no tool 'nope'"
    ),
    408: _call("Nobody approved in time.", "human_approval", "approval 1a2b3c4d timed out"),
    413: _call(
        "The body is over 1 MiB.", "error", "request body too large: limit is 1048576 bytes"
    ),
    429: _call("Rate limit or loop detection.", "rate_limited", "rate limit: 60 calls per minute"),
    500: _call(
        'A fault of the mesh (`error` is "internal error"; logged with the trace id).',
        "error",
        "internal error",
    ),
    502: _call(
        "The upstream failed: its error, exit, or its worker died.",
        "allow",
        "upstream error from fs.read_file: [-32603] ENOENT",
    ),
    503: _call(
        "A service or the upstream is unavailable.", "error", "upstream unavailable: fs (no worker)"
    ),
    504: _call(
        "The upstream gave no answer in time.",
        "allow",
        "upstream timeout: fs.read_file gave no answer in 60s",
    ),
}


def routes(
    gw: Gateway, metrics: MetricsRoute, console: Console, tool_fast_path: Any
) -> list[ApiRoute]:
    table = [
        ApiRoute(
            "POST",
            "/tool/{tool:path}",
            tool_fast_path,
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
        ApiRoute(
            "GET",
            "/tools",
            gw.tools,
            "Every upstream tool",
            {200: Answer(list[shapes.ToolView], "The tools, as `<server>.<tool>`."), 500: INTERNAL},
            tags=["catalog"],
        ),
        ApiRoute(
            "GET",
            "/mcp-servers",
            gw.mcp_servers,
            "Every upstream server and its workers",
            {
                200: Answer(list[shapes.ServerView], "One entry per configured source."),
                500: INTERNAL,
            },
            tags=["catalog"],
        ),
        ApiRoute(
            "GET",
            "/traces",
            gw.traces,
            "Recorded calls, newest first",
            {
                200: Answer(list[TraceRecord], "Calls (default 100)."),
                400: BAD_QUERY,
                500: INTERNAL,
                503: TRACES_DOWN,
            },
            query=TracesQuery,
            tags=["traces"],
        ),
        ApiRoute(
            "GET",
            "/otel-traces",
            gw.otel_traces,
            "Recorded calls as one OTLP/JSON export",
            {
                200: Answer(
                    dict[str, Any],
                    "OTLP/JSON `{resourceSpans: [...]}`: a span per call, a child span "
                    "per step (default 200 calls).",
                ),
                400: BAD_QUERY,
                500: INTERNAL,
                503: TRACES_DOWN,
            },
            query=OtelTracesQuery,
            tags=["traces"],
        ),
        ApiRoute(
            "GET",
            "/sessions",
            gw.sessions,
            "Sessions, most recently active first",
            {
                200: Answer(
                    list[shapes.SessionSummary],
                    "Sessions (default 50).",
                    links=_link("get_sessions_id", "/0/session_id"),
                ),
                400: BAD_QUERY,
                500: INTERNAL,
                503: TRACES_DOWN,
            },
            query=Limited,
            tags=["traces"],
        ),
        ApiRoute(
            "GET",
            "/sessions/{id}",
            gw.session,
            "The calls of one session, newest first",
            {
                200: Answer(list[TraceRecord], "Calls (default 200); an unknown session has none."),
                400: BAD_QUERY,
                500: INTERNAL,
                503: TRACES_DOWN,
            },
            query=Limited,
            tags=["traces"],
        ),
        ApiRoute(
            "GET",
            "/approvals",
            gw.approvals,
            "Approvals, newest first",
            {
                200: Answer(
                    list[shapes.ApprovalView],
                    "Approvals (default 500).",
                    links=_link("get_approvals_id", "/0/id")
                    | _link("post_approvals_id_decision", "/0/id"),
                ),
                400: BAD_QUERY,
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            query=ApprovalsQuery,
            tags=["approvals"],
        ),
        ApiRoute(
            "GET",
            "/approvals/{id}",
            gw.approval,
            "One approval, with the agent's recent calls",
            {
                200: Answer(
                    shapes.ApprovalDetail, "The approval (by id or a unique prefix of 4 or more)."
                ),
                400: _error(
                    "The id is too short, or a prefix of several.",
                    "approval id 'ab' is too short (at least 4)",
                ),
                404: _error("No such approval.", "no approval 1a2b3c4d"),
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            path_params={"id": ID},
            tags=["approvals"],
        ),
        ApiRoute(
            "POST",
            "/approvals/{id}/{decision:str}",
            gw.resolve,
            "Approve or deny a waiting call",
            {
                200: Answer(shapes.Resolved, "Resolved: the waiting call goes on (or is refused)."),
                400: BAD_BODY,
                401: NOT_AN_AGENT,
                403: NOT_AN_OPERATOR,
                404: _error(
                    "No such approval, or a decision other than approve / deny.",
                    "no approval 1a2b3c4d",
                ),
                409: _error("Already resolved.", "approval 1a2b3c4d is already approved"),
                413: TOO_LARGE,
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            body=ResolveBody,
            body_example={"resolved_by": "alice", "reasoning": "looks fine"},
            operator=True,
            path_params={"id": ID, "decision": {"type": "string", "enum": ["approve", "deny"]}},
            tags=["approvals"],
        ),
        ApiRoute(
            "GET",
            "/grants",
            gw.grants,
            "Active grants",
            {
                200: Answer(
                    list[shapes.GrantView],
                    "Grants in force.",
                    links=_link("delete_grants_id", "/0/id"),
                ),
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            query=GrantsQuery,
            tags=["approvals"],
        ),
        ApiRoute(
            "POST",
            "/grants",
            gw.create_grant,
            "Grant an agent tools for a while",
            {
                201: Answer(
                    shapes.GrantView,
                    "The grant: those calls are allowed until it expires.",
                    links=_link("delete_grants_id", "/id"),
                ),
                400: BAD_BODY,
                401: NOT_AN_AGENT,
                403: NOT_AN_OPERATOR,
                413: TOO_LARGE,
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            body=GrantBody,
            body_example={"agent": "claude", "tools": "filesystem.*", "duration": "30m"},
            operator=True,
            tags=["approvals"],
        ),
        ApiRoute(
            "DELETE",
            "/grants/{id}",
            gw.revoke_grant,
            "Revoke a grant",
            {
                200: Answer(shapes.Revoked, "Revoked."),
                400: _error(
                    "The prefix names several grants.", "grant id prefix '1a2b' is ambiguous"
                ),
                401: NOT_AN_AGENT,
                403: NOT_AN_OPERATOR,
                404: _error("No such grant (or already revoked).", "no grant 1a2b3c4d"),
                500: INTERNAL,
                503: APPROVALS_DOWN,
            },
            operator=True,
            path_params={"id": ID},
            tags=["approvals"],
        ),
        ApiRoute(
            "POST",
            "/reload",
            gw.reload,
            "Read the config and its policies again",
            {
                200: Answer(
                    shapes.Reloaded, "The policy set in force (`reloaded` or `unchanged`)."
                ),
                401: NOT_AN_AGENT,
                403: NOT_AN_OPERATOR,
                422: Answer(
                    shapes.Reloaded,
                    "The new config is invalid: the old set stays, `error` says why.",
                ),
                500: INTERNAL,
            },
            operator=True,
            tags=["operations"],
        ),
        ApiRoute(
            "GET",
            "/health",
            gw.health,
            "Health: 200 whenever the gateway answers",
            {
                200: Answer(
                    shapes.Health, "`status` ok or degraded, with the detail of each part."
                ),
                500: INTERNAL,
            },
            tags=["operations"],
        ),
        ApiRoute(
            "GET",
            "/ready",
            gw.ready,
            "Readiness: 200 when every role and upstream is up",
            {
                200: Answer(shapes.Ready, "Ready."),
                500: INTERNAL,
                503: Answer(shapes.Ready, "Not ready: the detail says what is down."),
            },
            tags=["operations"],
        ),
        ApiRoute(
            "GET",
            "/version",
            gw.version,
            "Version",
            {
                200: Answer(
                    shapes.Version,
                    "This mesh's version.",
                    {
                        "version": agent_mesh.__version__,
                        "commit": "none",
                        "date": "unknown",
                        "name": "agent-mesh",
                        "implementation": "python",
                    },
                ),
                500: INTERNAL,
            },
            tags=["operations"],
        ),
        ApiRoute(
            "GET",
            "/metrics",
            metrics.handle,
            "Prometheus metrics of the whole tree",
            {
                200: Answer(str, "Prometheus text format.", media_type="text/plain"),
                404: _error(
                    "Metrics are off in the config.", "metrics are off in this mesh's config"
                ),
                500: INTERNAL,
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
                500: INTERNAL,
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
                500: INTERNAL,
            },
            tags=["console"],
        ),
    ]
    spec: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        """This document, generated from the routes' own models (gateway/api.py)."""
        if not spec:
            spec.update(document(table, version=agent_mesh.__version__, description=DESCRIPTION))
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
