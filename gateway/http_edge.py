"""The gateway's HTTP edge, the same for every HTTP route: who is calling (`Authorization:
Bearer agent:<id>`, compat.md §3), the JSON body (within 1 MiB), and the answer to a request
that cannot be served (`HttpError(status, message)` → `{"error": message}` with that status).

`EdgeRoutes` answers the two hot routes before the Starlette app, whose middleware stack and router
would cost a third of the gateway's CPU per call: `POST /tool/{server.tool}` (every REST agent's
call) and `/mcp` (handed to its endpoint). In the gateway process `POST /tool/` does not even come
through ASGI: gateway/rest_protocol.py answers it on uvicorn's connection with
`EdgeRoutes.answer_tool`, the same answer this module's ASGI path gives. Everything else, and every
other method on /tool/..., goes to the Starlette app. Same contract: every answer to `POST
/tool/...`, a refused request included, is Go's tool-call response ({trace_id, policy, latency_ms,
error, ...}) with the trace id also in the `X-Trace-Id` header; the trace id comes from a W3C
`traceparent`, else `X-Trace-Id`, else a new one."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import last_resort
from gateway.call import Outcome, TraceParent, parse_traceparent

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline

MAX_BODY_BYTES = 1 << 20
ANONYMOUS = "anonymous"
# The header, blank or a bearer, as one regex that both Python and JSON Schema read alike
# (GET /openapi.json describes the header with it).
AUTHORIZATION_PATTERN = (
    r"^[ \t]*(?:[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[Aa][Gg][Ee][Nn][Tt]:"
    r"([A-Za-z0-9._:@/+-]{1,128}))?[ \t]*$"
)
_AUTHORIZATION = re.compile(AUTHORIZATION_PATTERN)


class IdentityError(ValueError):
    pass


def claimed_agent(header: str | None) -> str | None:
    """The agent a caller says it is: None when it says nothing (no header, or a blank one);
    `Bearer agent:<id>` → id; anything else is refused (401)."""
    if header is None:
        return None
    match = _AUTHORIZATION.fullmatch(header)
    if match is None:
        raise IdentityError(
            "Authorization header must be 'Bearer agent:<id>' "
            "(id: 1-128 of letters, digits and . _ : @ / + -)"
        )
    return match.group(1)


def agent_from_authorization(header: str | None) -> str:
    """No header (or a blank one) → "anonymous"; `Bearer agent:<id>` → id; else 401."""
    return claimed_agent(header) or ANONYMOUS


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def read_json(headers: Mapping[str, str], receive: Receive) -> Any:
    """The request body as JSON (an empty body is `{}`), within MAX_BODY_BYTES."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HttpError(413, f"request body too large: limit is {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"request body too large: limit is {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return parse_json(b"".join(chunks))


def parse_json(raw: bytes) -> Any:
    """A request body as JSON (an empty body is `{}`); HttpError(400) naming what is wrong."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and json's JSONDecodeError are ValueErrors
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise HttpError(400, "invalid JSON body: nested too deeply") from None


_PREFIX = "/tool/"
_HEADERS = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class ToolAnswer:
    """What a `POST /tool/...` is answered: status, JSON body, X-Trace-Id, and the call it made
    (None: refused before it was one), whose trace is recorded once the answer is written."""

    status: int
    payload: bytes
    trace_header: bytes
    outcome: Outcome | None

    def traced(self, pipeline: Pipeline) -> None:
        if self.outcome is not None:  # traced once answered: not in the caller's latency
            pipeline.trace(self.outcome)


class EdgeRoutes:
    def __init__(self, app: ASGIApp, pipeline: Pipeline, mcp: ASGIApp | None = None) -> None:
        self.app = app  # the Starlette app: every other route
        self.pipeline = pipeline
        self.mcp = mcp  # the /mcp endpoint (None: served by the app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mcp is not None and scope["type"] == "http" and scope["path"] == "/mcp":
            await self.mcp(scope, receive, send)
            return
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        answer = await self.answer_tool(
            scope["path"][len(_PREFIX) :], headers, lambda: read_json(headers, receive)
        )
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        *_HEADERS,
                        (b"content-length", str(len(answer.payload)).encode()),
                        (b"x-trace-id", answer.trace_header),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer.payload})
        finally:
            answer.traced(self.pipeline)

    async def answer_tool(
        self, tool: str, headers: dict[str, str], body: Callable[[], Awaitable[Any]]
    ) -> ToolAnswer:
        """The answer to `POST /tool/<tool>` with these headers (names lower case) and `body`
        (reads the request body as JSON): served here (ASGI) and by gateway/rest_protocol.py."""
        parent = parse_traceparent(headers.get("traceparent"))
        trace_id = (
            parent.trace_id if parent is not None else headers.get("x-trace-id") or uuid.uuid4().hex
        )
        outcome: Outcome | None = None
        try:
            try:
                outcome = await self._call(tool, headers, body, trace_id, parent)
                status, answer = outcome.status, outcome.body()
            except HttpError as exc:  # refused before it was a call: not traced (as in Go)
                status, answer = (
                    exc.status,
                    {"trace_id": trace_id, "policy": "error", "latency_ms": 0, "error": str(exc)},
                )
            # A lone surrogate (an upstream's; never valid UTF-8) is written as its JSON escape.
            payload = json.dumps(
                answer, separators=(",", ":"), ensure_ascii=False, default=str
            ).encode("utf-8", "backslashreplace")
        except Exception as exc:  # noqa: BLE001 — the last resort: logged with the trace id, no traceback sent
            last_resort.record(exc, trace_id, "POST", _PREFIX + tool)
            status, answer = 500, {"policy": "error", "latency_ms": 0, **last_resort.body(trace_id)}
            payload = json.dumps(answer).encode()
        trace_header = str(answer["trace_id"]).encode("latin-1", "replace")
        return ToolAnswer(status, payload, trace_header, outcome)

    async def _call(
        self,
        tool: str,
        headers: dict[str, str],
        read_body: Callable[[], Awaitable[Any]],
        trace_id: str,
        parent: TraceParent | None,
    ) -> Outcome:
        try:
            agent = agent_from_authorization(headers.get("authorization"))
        except IdentityError as exc:
            raise HttpError(401, str(exc)) from None
        body = await read_body()
        params = body.get("params", {}) if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise HttpError(
                400, 'invalid request body: expected {"params": {...}} (params must be an object)'
            )
        if not tool:
            raise HttpError(404, "unknown tool: name it as /tool/<server>.<tool>")
        return await self.pipeline.call_tool(
            agent,
            tool,
            params,
            session_id=headers.get("x-session-id", ""),
            trace_id=trace_id,
            callback_url=headers.get("x-callback-url") or None,
            parent=parent,
            trace_after_answer=True,
        )
