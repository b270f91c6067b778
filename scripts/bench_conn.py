"""The benchmarks' load generators: one persistent raw HTTP/1.1 connection per concurrent worker
(no client library in the measurement), to a mesh's REST API (`POST /tool/<tool>`) or to its
`/mcp` (one MCP session over Streamable HTTP, its answers JSON or SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

AGENT = "bench"

Params = Callable[[int], dict[str, Any]]  # call number -> the tool's params


def echo(n: int) -> dict[str, Any]:
    return {"message": f"hi {n}"}


class HttpConn:
    """One keep-alive connection POSTing to /tool/<tool> (reopened if lost); a call is ok when it
    answers 200 and, with `expect`, its reply holds `expect.format(n=n)`."""

    def __init__(
        self,
        port: int,
        tool: str = "everything.echo",
        params: Params = echo,
        expect: str | None = None,
        agent: str = AGENT,
    ) -> None:
        self.port = port
        self.params, self.expect = params, expect
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.head = (
            f"POST /tool/{tool} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer agent:{agent}\r\nContent-Type: application/json\r\n"
        )

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One request on the connection: (status, headers, body; a chunked one read whole)."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            else:  # chunked (an SSE stream): read to the last chunk
                parts = []
                while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                    parts.append((await reader.readexactly(size + 2))[:-2])
                await reader.readuntil(b"\r\n")
                data = b"".join(parts)
        except BaseException:
            self.close()  # unknown state: never reuse it
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    async def call(self, n: int) -> str | None:
        status, _, raw = await self.post(json.dumps({"params": self.params(n)}).encode())
        data = raw.decode(errors="replace")
        if status != 200:
            return f"HTTP {status}: {data[:500]}"
        bad = self.expect is not None and self.expect.format(n=n) not in data
        return f"call {n}: unexpected reply {data[:500]}" if bad else None

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class McpConn(HttpConn):
    """One MCP session over Streamable HTTP on `/mcp` (raw HTTP/1.1, one keep-alive connection),
    opened by `open` (or the first call); each call is a `tools/call`, its answer JSON or SSE."""

    def __init__(
        self, port: int, agent: str = AGENT, tool: str = "everything.echo", path: str = "/mcp"
    ) -> None:
        super().__init__(port)
        self.tool = tool.encode()
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer agent:{agent}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n"
        )
        self.session = ""

    async def open(self) -> str | None:
        """Initialize the session (before a measurement: opening one costs more than a call)."""
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        }
        status, headers, data = await self.post(json.dumps(init).encode())
        if status != 200 or "mcp-session-id" not in headers:
            return f"initialize: HTTP {status}: {data[:300]!r}"
        self.session = headers["mcp-session-id"]
        self.head += f"Mcp-Session-Id: {self.session}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
        await self.post(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        return None

    async def call(self, n: int) -> str | None:
        if not self.session and (problem := await self.open()) is not None:
            return problem
        body = (
            b'{"jsonrpc": "2.0", "id": %d, "method": "tools/call", '
            b'"params": {"name": "%s", "arguments": {"message": "hi %d"}}}' % (n, self.tool, n)
        )
        status, headers, data = await self.post(body)
        if headers.get("content-type", "").startswith("text/event-stream"):
            events = [line[5:] for line in data.split(b"\n") if line.startswith(b"data:")]
            data = next((e for e in events if b'"result"' in e or b'"error"' in e), data)
        answer = json.loads(data) if status == 200 else None
        if (
            not isinstance(answer, dict)
            or "result" not in answer
            or answer["result"].get("isError")
        ):
            return f"HTTP {status}: {data.decode(errors='replace')[:500]}"
        return None
