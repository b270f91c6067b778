"""`POST /tool/{server.tool}` as a bare ASGI handler in front of the Starlette app.

This is the hot path of every REST agent; Starlette's middleware stack and router cost a third
of the gateway's CPU per call, so this one route skips them. Everything else (and every other
method on /tool/...) goes to the Starlette app. Same contract: compat.md §3, errors as JSON.

Every answer, a refused request included, is Go's tool-call response ({trace_id, policy,
latency_ms, error, ...}) with the trace id also in the `X-Trace-Id` header. The trace id comes
from a W3C `traceparent`, else `X-Trace-Id`, else a new one.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import last_resort
from gateway.call import TraceParent, parse_traceparent
from gateway.http_request import HttpError, IdentityError, agent_from_authorization, read_json
from gateway.pipeline import Pipeline

_PREFIX = "/tool/"
_HEADERS = [(b"content-type", b"application/json")]


class ToolRoute:
    def __init__(self, app: ASGIApp, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = parse_traceparent(headers.get("traceparent"))
        trace_id = (
            parent.trace_id if parent is not None else headers.get("x-trace-id") or uuid.uuid4().hex
        )
        try:
            try:
                status, body = await self._call(
                    scope["path"][len(_PREFIX) :], headers, receive, trace_id, parent
                )
            except HttpError as exc:  # refused before it was a call: not traced (as in Go)
                status, body = (
                    exc.status,
                    {"trace_id": trace_id, "policy": "error", "latency_ms": 0, "error": str(exc)},
                )
            # A lone surrogate (an upstream's; never valid UTF-8) is written as its JSON escape.
            payload = json.dumps(
                body, separators=(",", ":"), ensure_ascii=False, default=str
            ).encode("utf-8", "backslashreplace")
        except Exception as exc:  # noqa: BLE001 — the last resort: logged with the trace id, no traceback sent
            last_resort.record(exc, trace_id, "POST", scope["path"])
            status, body = 500, {"policy": "error", "latency_ms": 0, **last_resort.body(trace_id)}
            payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *_HEADERS,
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-trace-id", str(body["trace_id"]).encode("latin-1", "replace")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _call(
        self,
        tool: str,
        headers: dict[str, str],
        receive: Receive,
        trace_id: str,
        parent: TraceParent | None,
    ) -> tuple[int, dict[str, Any]]:
        try:
            agent = agent_from_authorization(headers.get("authorization"))
        except IdentityError as exc:
            raise HttpError(401, str(exc)) from None
        body = await read_json(headers, receive)
        params = body.get("params", {}) if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise HttpError(
                400, 'invalid request body: expected {"params": {...}} (params must be an object)'
            )
        if not tool:
            raise HttpError(404, "unknown tool: name it as /tool/<server>.<tool>")
        outcome = await self.pipeline.call_tool(
            agent,
            tool,
            params,
            session_id=headers.get("x-session-id", ""),
            trace_id=trace_id,
            callback_url=headers.get("x-callback-url") or None,
            parent=parent,
        )
        return outcome.status, outcome.body()
