"""`POST /tool/...` answered on uvicorn's HTTP connection without ASGI: the REST hot path.

uvicorn's request cycle (a scope, an ASGI task waiting on an event for the body, the response start
and body as two messages, checked and written as two socket writes) cost 25 µs of CPU per call at
16 concurrent callers and 54 µs at one (docs/profiling.md), and a socket write. `RestProtocol` is
uvicorn's own httptools protocol (pinned version: parser, keep-alive and its timeout, pipelining,
flow control, shutdown, a malformed request's 400 are all its own) with one change: a request that
is `POST /tool/...` (no upgrade) gets a `ToolCycle` instead of uvicorn's cycle. It takes the body
as the parser gives it, asks `EdgeRoutes.answer_tool` (the same answer as the ASGI path: status,
Go's body, X-Trace-Id) and writes the response in one write, with uvicorn's default headers (date,
server) and its `connection: close` rule. Every other request is uvicorn's, unchanged."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)

from gateway.http_edge import MAX_BODY_BYTES, HttpError, parse_json

if TYPE_CHECKING:
    from gateway.http_edge import EdgeRoutes

_PREFIX = b"/tool/"
_TOO_LARGE = f"request body too large: limit is {MAX_BODY_BYTES} bytes"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def rest_protocol(edge: EdgeRoutes) -> type[HttpToolsProtocol]:
    """uvicorn's `http` protocol class for a gateway whose routes are `edge`."""
    return type("RestProtocol", (RestProtocol,), {"edge": edge})


class RestProtocol(HttpToolsProtocol):
    edge: EdgeRoutes

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        if (
            self.parser.get_method() != b"POST"
            or not parsed.path.startswith(_PREFIX)
            or self.parser.should_upgrade()
            or self.limit_concurrency is not None  # (uvicorn's 503 when over it)
            or self.root_path
        ):
            super().on_headers_complete()
            return
        path = parsed.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        version = self.parser.get_http_version()
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        cycle = ToolCycle(self, path[len(_PREFIX) :], keep_alive)
        existing, self.cycle = self.cycle, cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:  # pipelined: answered in order, after the one before it (as uvicorn does)
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if isinstance(cycle, ToolCycle):
            cycle.took(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if isinstance(cycle, ToolCycle):
            cycle.more_body = False
            cycle.message_event.set()
        else:
            super().on_message_complete()


class _Wakeup:
    """What uvicorn's protocol sets when a cycle has news (body, its end, a lost connection)."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class ToolCycle:
    """One `POST /tool/...` on a connection: the attributes uvicorn's protocol reads and sets on
    its cycle (`response_complete`, `disconnected`, `keep_alive`, `message_event`, `run_asgi`)."""

    def __init__(self, protocol: RestProtocol, tool: str, keep_alive: bool) -> None:
        self.protocol = protocol
        self.tool = tool
        self.transport = protocol.transport
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in protocol.headers}
        self.keep_alive = keep_alive
        self.expect_continue = protocol.expect_100_continue
        self.on_response = protocol.on_response_complete
        self.body = bytearray()
        self.more_body = True
        self.too_large = False
        self.disconnected = False
        self.response_complete = False
        self.message_event = _Wakeup()

    def took(self, chunk: bytes) -> None:
        if self.response_complete or self.too_large:
            return  # answered already (e.g. 413): the rest of the body is read and dropped
        self.body += chunk
        if len(self.body) > MAX_BODY_BYTES:
            self.too_large = True
            self.body = bytearray()
        self.message_event.set()

    async def read_json(self) -> Any:
        """The body as JSON, as gateway.http_edge.read_json reads it from ASGI."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HttpError(413, _TOO_LARGE)
        if self.expect_continue and not self.transport.is_closing():
            self.transport.write(_CONTINUE)
        while self.more_body and not self.disconnected and not self.too_large:
            self.protocol.flow.resume_reading()
            waiter = self.message_event.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.message_event.waiter = None
        if self.disconnected:
            raise HttpError(400, "client disconnected")
        if self.too_large:
            raise HttpError(413, _TOO_LARGE)
        return parse_json(bytes(self.body))

    async def run_asgi(self, app: Any) -> None:
        """Named as uvicorn's cycle method that its protocol starts (and pipelining resumes)."""
        edge = self.protocol.edge
        answer = await edge.answer_tool(self.tool, self.headers, self.read_json)
        try:
            self.write(answer.status, answer.payload, answer.trace_header)
        finally:
            answer.traced(edge.pipeline)
            self.on_response = _nothing

    def write(self, status: int, payload: bytes, trace_header: bytes) -> None:
        """The response, as uvicorn writes one (its default headers first, `connection: close`
        when the connection ends), in one write."""
        if self.disconnected:
            return
        headers = [(b"content-type", b"application/json"), (b"x-trace-id", trace_header)]
        if HEADER_VALUE_RE.search(trace_header):  # what uvicorn refuses to write: its 500
            self.protocol.logger.error("Invalid HTTP header value: x-trace-id %r", trace_header)
            self.keep_alive = False
            status, payload = 500, b"Internal Server Error"
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
        content = [STATUS_LINE[status]]
        for name, value in [
            *self.protocol.server_state.default_headers,
            headers[0],
            (b"content-length", str(len(payload)).encode()),
            *headers[1:],
        ]:
            content += [name, b": ", value, b"\r\n"]
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", payload]
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


def _nothing() -> None:
    pass
