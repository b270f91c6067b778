"""The answer to whatever escapes a handler of the HTTP gateway: a 500 with JSON
`{"error": "internal error", "trace_id": ...}` (the id also in `X-Trace-Id`), the exception
logged once with that trace id (its traceback in the log, never to the caller) and counted
(`internal_errors` in /health). Bad input is never this: it is a 4xx naming the problem.

Starlette answers through `handler` (its ServerErrorMiddleware) and then re-raises; `LastResort`,
outermost, swallows that re-raise so that uvicorn neither logs it again nor drops the
connection, and answers anything that escaped outside Starlette. The `/tool` fast path
(gateway/http_edge.py) answers its own, with `record` and `body`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.call import parse_traceparent

log = logging.getLogger("gateway.internal_error")

_ANSWERED = "agent_mesh.internal_error"  # scope key: Starlette's handler answered this exception
_count = 0


def internal_errors() -> int:
    """How many requests this process answered with an internal error."""
    return _count


def trace_id(headers: Mapping[str, str]) -> str:
    """The request's trace id as the tool route takes it: W3C `traceparent`, else `X-Trace-Id`,
    else new."""
    parent = parse_traceparent(headers.get("traceparent"))
    return parent.trace_id if parent is not None else headers.get("x-trace-id") or uuid.uuid4().hex


def record(exc: BaseException, trace: str, method: str, path: str) -> None:
    global _count
    _count += 1
    log.error("internal error (trace %s) answering %s %s", trace, method, path, exc_info=exc)


def body(trace: str) -> dict[str, Any]:
    return {"error": "internal error", "trace_id": trace}


async def handler(request: Request, exc: Exception) -> Response:
    trace = trace_id(request.headers)
    record(exc, trace, request.method, request.url.path)
    request.scope[_ANSWERED] = exc
    return JSONResponse(body(trace), status_code=500, headers={"x-trace-id": trace})


class LastResort:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if scope["type"] != "http":
                raise  # lifespan: a gateway that cannot start must say so
            if scope.get(_ANSWERED) is exc:
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            trace = trace_id(headers)
            record(exc, trace, scope["method"], scope["path"])
            with suppress(Exception):  # fails if the response had started: nothing more to say
                await JSONResponse(body(trace), status_code=500, headers={"x-trace-id": trace})(
                    scope, receive, send
                )
