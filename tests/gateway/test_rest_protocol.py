"""gateway/rest_protocol.py: `POST /tool/...` answered on uvicorn's connection without ASGI.

A real uvicorn serves `EdgeRoutes` twice, once with its own httptools protocol (the ASGI path)
and once with `RestProtocol`; raw HTTP/1.1 over TCP asks both. The pipeline is a stand-in (the
call's answer is the test's); what is under test is the HTTP: the same bytes as the ASGI path,
keep-alive, pipelining in order, a body in pieces or chunked, `Expect: 100-continue`, the body
limit, HTTP/1.0, a client that goes away.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.call import Outcome
from gateway.http_edge import MAX_BODY_BYTES, EdgeRoutes
from gateway.rest_protocol import rest_protocol


class Pipe:
    """The stand-in pipeline: echoes the params after `delay` seconds (by the message)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.traced: list[str] = []

    async def call_tool(self, agent: str, tool: str, params: dict[str, Any], **how: Any) -> Outcome:
        self.calls.append((agent, tool, params))
        await asyncio.sleep(float(params.get("delay", 0)))
        result = {"content": [{"type": "text", "text": f"Echo: {params.get('message')}"}]}
        return Outcome(200, "allow", how["trace_id"], latency_ms=1.0, result=result)

    def trace(self, outcome: Outcome) -> None:
        self.traced.append(outcome.trace_id)


async def _other(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await JSONResponse({"route": "other", "path": scope["path"]})(scope, receive, send)


class Served:
    def __init__(self, port: int, pipe: Pipe) -> None:
        self.port, self.pipe = port, pipe

    async def ask(self, raw: bytes, *, answers: int = 1, close: bool = False) -> bytes:
        """Send `raw`, read until `answers` responses came (or, `close`, until EOF)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            if close:
                return await asyncio.wait_for(reader.read(), 10)
            got = b""
            while len(_responses(got)) < answers:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                assert chunk, f"connection closed after {got!r}"
                got += chunk
            return got
        finally:
            writer.close()


def _responses(data: bytes) -> list[bytes]:
    """The complete responses (with Content-Length) in `data`, 1xx ones included."""
    out, rest = [], data
    while b"\r\n\r\n" in rest:
        head, _, after = rest.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        size = int(length.group(1)) if length else 0
        if len(after) < size:
            break
        out.append(head + b"\r\n\r\n" + after[:size])
        rest = after[size:]
    return out


async def _serve(http: Any, pipe: Pipe) -> AsyncIterator[Served]:
    edge = EdgeRoutes(_other, pipe)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proto = rest_protocol(edge) if http == "rest" else "httptools"
    server = uvicorn.Server(uvicorn.Config(edge, http=proto, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield Served(port, pipe)
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
async def rest() -> AsyncIterator[Served]:
    async for served in _serve("rest", Pipe()):
        yield served


@pytest.fixture
async def asgi() -> AsyncIterator[Served]:
    async for served in _serve("asgi", Pipe()):
        yield served


def _post(
    body: bytes, *, extra: bytes = b"", version: bytes = b"1.1", tool: bytes = b"fs.echo"
) -> bytes:
    return (
        b"POST /tool/" + tool + b" HTTP/" + version + b"\r\nHost: x\r\n"
        b"Authorization: Bearer agent:a1\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _normal(response: bytes) -> bytes:
    """A response without what differs per request: the date and a generated trace id."""
    response = re.sub(rb"date: [^\r]*\r\n", b"", response)
    return re.sub(rb"[0-9a-f]{32}", b"<trace>", response)


REQUESTS = [
    _post(b'{"params": {"message": "hi"}}'),
    _post(b'{"params": {"message": "hi"}}', extra=b"X-Trace-Id: mine-1\r\n"),
    _post(b'{"params": {"message": "hi"}}', version=b"1.0"),
    _post(b"{not json"),
    _post(b'{"params": [1]}'),
    _post(b""),
    _post(b'{"params": {}}', tool=b""),
    _post(b'{"params": {"message": "caf%C3%A9"}}', tool=b"fs.caf%C3%A9"),
    _post(b"{}", extra=b"Authorization: Basic abc\r\n"),
    b"POST /tool/fs.echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % (MAX_BODY_BYTES + 1),
]


@pytest.mark.parametrize("raw", REQUESTS, ids=range(len(REQUESTS)))
async def test_the_same_answer_as_the_asgi_path(rest: Served, asgi: Served, raw: bytes) -> None:
    ours, theirs = await rest.ask(raw), await asgi.ask(raw)
    assert _normal(ours) == _normal(theirs)
    assert ours.startswith(b"HTTP/1.1 ") and b"\r\nx-trace-id: " in ours
    assert rest.pipe.calls == asgi.pipe.calls
    assert len(rest.pipe.traced) == len(asgi.pipe.traced) == len(rest.pipe.calls)


async def test_pipelined_requests_are_answered_in_order(rest: Served) -> None:
    slow = _post(b'{"params": {"message": "first", "delay": 0.2}}')
    other = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    fast = _post(b'{"params": {"message": "third"}}')
    first, second, third = _responses(await rest.ask(slow + other + fast, answers=3))
    assert b"Echo: first" in first and b'"route":"other"' in second and b"Echo: third" in third


async def test_keep_alive_serves_many_and_http_1_0_closes(rest: Served) -> None:
    answers = _responses(await rest.ask(_post(b'{"params": {"message": "a"}}') * 3, answers=3))
    assert len(answers) == 3 and all(b"connection: close" not in a for a in answers)
    closed = await rest.ask(_post(b'{"params": {"message": "b"}}', version=b"1.0"), close=True)
    assert b"Echo: b" in closed and b"\r\nconnection: close\r\n" in closed


async def test_a_body_in_pieces_chunked_or_after_100_continue(rest: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rest.port)
    try:
        body = b'{"params": {"message": "later"}}'
        writer.write(_post(body, extra=b"Expect: 100-continue\r\n")[: -len(body)])
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(body[:5])
        await asyncio.sleep(0.05)
        writer.write(body[5:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK")
        size = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert b"Echo: later" in await reader.readexactly(size)
        writer.write(
            b"POST /tool/fs.echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        size = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert b"Echo: later" in await reader.readexactly(size)
    finally:
        writer.close()


async def test_a_body_past_the_limit_is_413_and_the_connection_goes_on(rest: Served) -> None:
    big = b'{"params": {"message": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    data = await rest.ask(_post(big) + _post(b'{"params": {"message": "next"}}'), answers=2)
    too_large, following = _responses(data)
    assert too_large.startswith(b"HTTP/1.1 413 ") and b"request body too large" in too_large
    assert b"Echo: next" in following
    assert [params.get("message") for _, _, params in rest.pipe.calls] == ["next"]


async def test_a_client_gone_mid_body_is_not_a_call(rest: Served) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", rest.port)
    writer.write(_post(b'{"params": {"message": "never"}}')[:-5])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.sleep(0.05)
    assert b"Echo: still" in await rest.ask(_post(b'{"params": {"message": "still"}}'))
    assert [params.get("message") for _, _, params in rest.pipe.calls] == ["still"]
