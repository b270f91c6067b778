"""`POST /tool/{server.tool}` as a bare ASGI handler in front of the Starlette app.

This is the hot path of every REST agent; Starlette's middleware stack and router cost a third
of the gateway's CPU per call, so this one route skips them. Everything else (and every other
method on /tool/...) goes to the Starlette app. Same contract: compat.md §3, errors as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http_body import HttpError, read_json
from gateway.identity import IdentityError, agent_from_authorization
from gateway.pipeline import Pipeline

_PREFIX = "/tool/"
_HEADERS = [(b"content-type", b"application/json")]


class ToolRoute:
    def __init__(self, app: ASGIApp, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            status, body = await self._call(scope["path"][len(_PREFIX):], headers, receive)
        except HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _call(self, tool: str, headers: dict[str, str], receive: Receive) -> tuple[int, dict[str, Any]]:
        try:
            agent = agent_from_authorization(headers.get("authorization"))
        except IdentityError as exc:
            raise HttpError(401, str(exc)) from None
        body = await read_json(headers, receive)
        params = body.get("params", {}) if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise HttpError(400, 'invalid request body: expected {"params": {...}} (params must be an object)')
        if not tool:
            raise HttpError(404, "unknown tool: name it as /tool/<server>.<tool>")
        outcome = await self.pipeline.call_tool(
            agent, tool, params,
            session_id=headers.get("x-session-id", ""),
            trace_id=headers.get("x-trace-id") or None,
            callback_url=headers.get("x-callback-url") or None,
        )
        return outcome.status, outcome.body()
