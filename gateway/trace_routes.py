"""The REST routes that read the trace store (`traces` on the bus): `/traces`, `/otel-traces`,
`/sessions`, `/sessions/{id}`. A read waits for this gateway's own records to be stored first,
so a caller that got its answer finds its trace (read-your-writes, gateway/trace_outbox.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.client import BusClient
from bus.errors import BusError, unavailable_service
from bus.messages import TRACES, TraceQuery, TraceRecord
from gateway import api_shapes as shapes
from gateway.api_answers import (
    BAD_QUERY,
    INTERNAL,
    TRACES_DOWN,
    link,
)
from gateway.api_requests import Limited, OtelTracesQuery, TracesQuery
from gateway.api_route import Answer, ApiRoute, Handler
from gateway.http_edge import HttpError
from gateway.trace_outbox import TraceOutbox

TRACE_SETTLE = 2.0  # s a trace read waits for this gateway's own records to be stored


class TraceRoutes:
    def __init__(self, client: BusClient, outbox: TraceOutbox) -> None:
        self.client = client
        self.outbox = outbox

    async def read(self, body: dict[str, Any]) -> Any:
        """One read of the trace store, after this gateway's own records are stored; a store
        that does not answer is a 503."""
        await self.outbox.settled(TRACE_SETTLE)
        try:
            return await self.client.request(TRACES, body, timeout=5.0)
        except BusError as exc:
            raise HttpError(503, unavailable_service("trace store", exc)) from None

    async def traces(self, request: Request, query: TracesQuery) -> Response:
        store = TraceQuery(
            agent=query.agent or None,
            tool=query.tool or None,
            session_id=query.session or None,
            limit=query.limit_or(100),
        )
        return JSONResponse((await self.read(store.dump()))["traces"])

    async def otel_traces(self, request: Request, query: OtelTracesQuery) -> Response:
        """Go's `/otel-traces`: the recent calls (`agent`, `tool`, `limit`, default 200) as one
        OTLP/JSON export, with a child span per step of each call (observe/otlp_json.py)."""
        store = TraceQuery(
            agent=query.agent or None, tool=query.tool or None, limit=query.limit_or(200)
        )
        from observe.otlp_json import otlp_traces  # not at start: a restarted gateway serves sooner

        return JSONResponse(otlp_traces((await self.read(store.dump()))["traces"]))

    async def sessions(self, request: Request, query: Limited) -> Response:
        return JSONResponse(
            (await self.read({"op": "sessions", "limit": query.limit_or(50)}))["sessions"]
        )

    async def session(self, request: Request, query: Limited) -> Response:
        """The calls of one session, newest first (Go: an unknown session is an empty list)."""
        store = TraceQuery(session_id=request.path_params["id"], limit=query.limit_or(200))
        return JSONResponse((await self.read(store.dump()))["traces"])

    def routes(self) -> list[ApiRoute]:
        return [
            _trace_read(
                "/traces",
                self.traces,
                "Recorded calls, newest first",
                Answer(list[TraceRecord], "Calls (default 100)."),
                TracesQuery,
            ),
            _trace_read(
                "/otel-traces",
                self.otel_traces,
                "Recorded calls as one OTLP/JSON export",
                Answer(
                    dict[str, Any],
                    "OTLP/JSON `{resourceSpans: [...]}`: a span per call, a child span "
                    "per step (default 200 calls).",
                ),
                OtelTracesQuery,
            ),
            _trace_read(
                "/sessions",
                self.sessions,
                "Sessions, most recently active first",
                Answer(
                    list[shapes.SessionSummary],
                    "Sessions (default 50).",
                    links=link("get_sessions_id", "/0/session_id"),
                ),
                Limited,
            ),
            _trace_read(
                "/sessions/{id}",
                self.session,
                "The calls of one session, newest first",
                Answer(list[TraceRecord], "Calls (default 200); an unknown session has none."),
                Limited,
            ),
        ]


def _trace_read(
    path: str, handler: Handler, summary: str, ok: Answer, query: type[BaseModel]
) -> ApiRoute:
    """A read of the trace store: its answer, or a bad query (400) or the store down (503)."""
    answers = {200: ok, 400: BAD_QUERY, 500: INTERNAL, 503: TRACES_DOWN}
    return ApiRoute("GET", path, handler, summary, answers, query=query, tags=["traces"])
