"""What an upstream is and how talking to one fails: the types `UpstreamClient`
(workers/mcp_client.py), its HTTP transports (workers/mcp_http_client.py) and the other tool
sources share. A leaf: it imports nothing of the project."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ProgressCallback = Callable[[dict[str, Any]], Awaitable[None]]
LogCallback = Callable[[dict[str, Any]], Awaitable[None]]
TRANSPORTS = frozenset({"stdio", "sse", "streamable_http", "http"})


class UpstreamException(Exception):
    """Base of everything `UpstreamClient` raises for upstream trouble. `reason`: the short
    why for people (`command 'x' not found on PATH`, `exited with code 1: <stderr line>`)."""

    reason: str = ""

    def because(self, reason: str) -> UpstreamException:
        self.reason = reason
        return self


class UpstreamError(UpstreamException):
    """The upstream answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message)
        self.code, self.message, self.data = code, message, data

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class UpstreamTimeout(UpstreamException):
    """No answer within the deadline (`notifications/cancelled` was sent upstream)."""


class UpstreamGone(UpstreamException):
    """The upstream process exited, the connection dropped, or the client was closed."""


class UpstreamClosed(UpstreamGone):
    """The client was already closed when the request came: it was never sent (a retry is safe)."""


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    transport: str  # "stdio" | "sse" | "streamable_http" | "http"
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # merged over os.environ (stdio)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"{self.name}: unknown transport {self.transport!r}")
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"{self.name}: stdio transport needs a command")
        if self.transport != "stdio" and not self.url:
            raise ValueError(f"{self.name}: {self.transport} transport needs a url")
