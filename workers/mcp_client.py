"""One live MCP client session to one upstream MCP server.

An `UpstreamClient` owns, for its lifetime: the transport (a spawned stdio
server and its whole process group, or an SSE / streamable-HTTP connection),
the upstream's `server_info` and `tools`, and the routing of progress and log
notifications back to the calls that asked for them.

stdio, the common case, is spoken by `StdioPeer` (workers/stdio_rpc.py): plain
JSON-RPC over the pipes, with the MCP handshake here; the HTTP transports run on
the official SDK (workers/mcp_http_client.py), imported only when one is used.

Results cross this boundary as MCP wire dicts, exactly as the upstream sent
them (the raw JSON-RPC `result`, never re-serialised), and every failure is one
of `UpstreamError`, `UpstreamTimeout` or `UpstreamGone`. `closed` is set as soon
as the upstream exits or the connection drops, so the owning worker can notice
and exit or restart.

Log messages (`notifications/message`): MCP does not tell which request one
relates to (stdio has no such thing on the wire, and the HTTP transports do not
keep the stream it came on), so each is delivered to every call in flight that
passed `on_log`, at the moment it arrives; with none in flight it is dropped.
List changes (`notifications/{tools,resources,prompts}/list_changed`) set
`list_changed`; tools also set `tools_changed`, the other kinds count in
`list_changes`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from workers.commands import start_failure
from workers.stdio_rpc import INTERNAL_ERROR, PeerGone, RpcError, StdioPeer
from workers.upstream_types import (
    LogCallback,
    ProgressCallback,
    UpstreamClosed,
    UpstreamError,
    UpstreamGone,
    UpstreamSpec,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from workers.mcp_http_client import HttpSession

log = logging.getLogger(__name__)

# What the SDK's ClientSession.initialize() offers and accepts (mcp_types.version
# LATEST_HANDSHAKE_VERSION, HANDSHAKE_PROTOCOL_VERSIONS); a test keeps them equal.
PROTOCOL_VERSION = "2025-11-25"
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
CLIENT_INFO = {"name": "agent-mesh", "version": "0.1.0"}
# Sampling and elicitation are advertised so upstreams may ask; the calling agent answers (on_ask).
CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
_ASKS = frozenset({"sampling/createMessage", "elicitation/create"})
_MAX_TOOL_PAGES = 1000


class _CallSink:
    """Delivers one call's progress and log notifications, in wire order, one at a time."""

    __slots__ = ("on_log", "on_progress", "tail", "tasks")

    def __init__(
        self,
        on_progress: ProgressCallback | None,
        on_log: LogCallback | None,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.on_progress, self.on_log, self.tasks = on_progress, on_log, tasks
        self.tail: asyncio.Task[None] | None = None

    def push(
        self, callback: Callable[[dict[str, Any]], Awaitable[None]], params: dict[str, Any]
    ) -> None:
        # Runs on the transport's reader, which must never wait on a user
        # callback; each delivery is a task chained behind the previous one.
        self.tail = task = asyncio.ensure_future(self._deliver(self.tail, callback, params))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(
        self,
        previous: asyncio.Task[None] | None,
        callback: Callable[[dict[str, Any]], Awaitable[None]],
        params: dict[str, Any],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await callback(params)
        except Exception:
            log.exception("progress/log callback raised")

    async def drain(self) -> None:
        if self.tail is not None:
            await asyncio.wait([self.tail])


class UpstreamClient:
    """A live MCP session to one upstream; use `async with` or `start()`/`close()`."""

    def __init__(self, spec: UpstreamSpec, *, connect_timeout: float = 30.0) -> None:
        self.spec = spec
        self.connect_timeout = connect_timeout  # initialize + tools/list, each page
        self.tools: list[dict[str, Any]] = []
        self.server_info: dict[str, Any] = {}  # the initialize result, as sent
        self.pid: int | None = None  # stdio only: leader of the server's process group
        self.closed = asyncio.Event()
        self.tools_changed = asyncio.Event()  # set on notifications/tools/list_changed
        self.list_changed = asyncio.Event()  # set on any notifications/*/list_changed
        self.list_changes: dict[str, int] = {"resources": 0, "prompts": 0}  # how many of each
        self._peer: StdioPeer | HttpSession | None = None
        self._sinks: dict[str, _CallSink] = {}  # by our progress token
        self._log_sinks: set[_CallSink] = set()  # in-flight calls that want log messages
        self._bg: set[asyncio.Task[None]] = set()
        self._tokens = itertools.count(1)
        # Hears notifications/resources/updated (for subscriptions; set by the owning worker).
        self.on_resource_updated: Callable[[dict[str, Any]], None] | None = None
        # Answers the upstream's sampling / elicitation requests (set by the owning worker).
        self.on_ask: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Spawn/connect, initialize and list tools; raises an `UpstreamException` on failure."""
        if self._peer is not None:
            raise RuntimeError("UpstreamClient can only be started once")
        spec = self.spec
        try:
            if spec.transport == "stdio":
                assert spec.command is not None
                self._peer = await StdioPeer.spawn(
                    [spec.command, *spec.args], env={**os.environ, **spec.env}, cwd=spec.cwd,
                    name=spec.name, on_notification=self._notified, on_request=self._answer,
                    on_gone=self.closed.set,
                )  # fmt: skip
                self.pid = self._peer.pid
                self.server_info = await self._initialize()
            else:
                from workers.mcp_http_client import HttpSession  # the SDK: slow to import

                self._peer = HttpSession(
                    spec, connect_timeout=self.connect_timeout, client_info=CLIENT_INFO,
                    on_notification=self._notified, ask=self._ask, on_gone=self.closed.set,
                )  # fmt: skip
                self.server_info = await self._peer.open()
            await self.refresh_tools()
        except BaseException as exc:
            await self.close()  # (the child's last stderr lines are in after this)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"upstream {spec.name!r} did not answer initialize in {self.connect_timeout}s"
                ).because(f"did not answer initialize in {self.connect_timeout:g}s") from None
            if isinstance(exc, RpcError):
                raise UpstreamError(exc.code, exc.message, exc.data).because(
                    f"refused to start: [{exc.code}] {exc.message}"
                ) from None
            if isinstance(exc, OSError | PeerGone):
                reason = start_failure(
                    spec.command, spec.cwd, {**os.environ, **spec.env}, exc, self._exit_reason()
                )
                raise UpstreamGone(f"upstream {spec.name!r} failed to start: {reason}").because(
                    reason
                ) from exc
            raise

    def knows(self, tool: str) -> bool:
        """Whether `tool` is one of the upstream's tools (as last listed)."""
        return any(t.get("name") == tool for t in self.tools)

    async def close(self) -> None:
        if self._peer is not None:
            await self._peer.close()
        self.closed.set()

    @property
    def gone_reason(self) -> str:
        """Why the upstream went away, for people (once `closed` is set)."""
        return self._exit_reason() or (
            "stopped" if self.spec.transport == "stdio" else "connection lost"
        )

    def _exit_reason(self) -> str | None:
        return self._peer.exit_reason() if isinstance(self._peer, StdioPeer) else None

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        """Call a tool; returns the upstream's CallToolResult wire dict untouched.

        `on_progress` gets each `notifications/progress` params dict (raw), `on_log`
        each `notifications/message` params dict received while the call runs (see
        the module docstring), all of them before this returns. `meta` is sent as
        the request's `_meta`.
        """
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if meta:
            params["_meta"] = dict(meta)
        return await self.request(
            "tools/call", params, timeout, on_progress=on_progress, on_log=on_log
        )

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        """Send any MCP request; returns the raw result dict as the upstream sent it.

        Raises `UpstreamError` (the upstream's JSON-RPC error), `UpstreamTimeout`
        (`notifications/cancelled` was sent) or `UpstreamGone`. Cancelling the
        awaiting task also sends `notifications/cancelled` upstream.
        """
        if on_progress is None and on_log is None:
            return await self._request(method, params, timeout)
        params = dict(params or {})
        sink = _CallSink(on_progress, on_log, self._bg)
        token: str | None = None
        if on_progress is not None:
            token = f"{self.spec.name}/{next(self._tokens)}"  # ours, so we can route it
            params["_meta"] = {**(params.get("_meta") or {}), "progressToken": token}
            self._sinks[token] = sink
        if on_log is not None:
            self._log_sinks.add(sink)
        try:
            result = await self._request(method, params, timeout)
        finally:
            if token is not None:
                del self._sinks[token]
            self._log_sinks.discard(sink)
        await sink.drain()  # every progress/log callback lands before the result
        return result

    async def refresh_tools(self) -> list[dict[str, Any]]:
        """Re-list tools (following `nextCursor`), store them in `tools` and return them."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        self.tools_changed.clear()  # a change announced while we list makes us list again
        for _ in range(_MAX_TOOL_PAGES):
            page = await self._request(
                "tools/list", {"cursor": cursor} if cursor else None, self.connect_timeout
            )
            tools.extend(page.get("tools", []))
            cursor = page.get("nextCursor")
            if not cursor:
                break
            if cursor in seen:
                raise UpstreamError(INTERNAL_ERROR, f"tools/list repeated cursor {cursor!r}")
            seen.add(cursor)
        self.tools = tools
        return tools

    async def _request(
        self, method: str, params: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        if self._peer is None or self.closed.is_set():
            raise UpstreamClosed(f"its connection is closed: {self.gone_reason}")
        try:
            result: dict[str, Any] = await self._peer.request(method, params, timeout)
        except RpcError as e:
            raise UpstreamError(e.code, e.message, e.data) from None
        except TimeoutError:
            raise UpstreamTimeout(
                f"{method} to {self.spec.name!r} timed out after {timeout}s"
            ) from None
        except PeerGone as e:
            raise UpstreamGone(
                f"upstream {self.spec.name!r} went away during {method} ({e})"
            ) from None
        return result

    async def _initialize(self) -> dict[str, Any]:
        """MCP's handshake as the SDK's ClientSession does it (stdio; over HTTP the SDK does it)."""
        assert isinstance(self._peer, StdioPeer)
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO,
        }
        result = await self._peer.request("initialize", params, self.connect_timeout)
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        if version not in PROTOCOL_VERSIONS:
            raise PeerGone(f"unsupported protocol version {version!r}")
        self._peer.notify("notifications/initialized")
        return cast(dict[str, Any], result)

    def _notified(self, method: str, params: Any) -> bool:
        """Take our calls' progress and log messages off the wire; True means consumed."""
        if method == "notifications/progress" and isinstance(params, dict) and self._sinks:
            token = params.get("progressToken")
            sink = self._sinks.get(token) if isinstance(token, str) else None
            if sink is not None and sink.on_progress is not None:
                sink.push(sink.on_progress, params)
                return True
        elif method == "notifications/message" and isinstance(params, dict) and self._log_sinks:
            for sink in self._log_sinks:  # not related to a request by MCP: every call in flight
                assert sink.on_log is not None
                sink.push(sink.on_log, params)
            return True
        elif method == "notifications/resources/updated" and isinstance(params, dict):
            if self.on_resource_updated is not None:
                self.on_resource_updated(params)
        elif method == "notifications/tools/list_changed":
            self.tools_changed.set()
            self.list_changed.set()
        elif method in (
            "notifications/resources/list_changed",
            "notifications/prompts/list_changed",
        ):
            kind = method.split("/")[1]
            self.list_changes[kind] += 1
            self.list_changed.set()
        return False

    async def _answer(self, method: str, params: Any) -> Any:
        """The upstream's requests to us (stdio; the SDK answers them over HTTP)."""
        if method == "ping":
            return {}
        if method not in _ASKS:  # roots/list too: we don't advertise roots
            raise RpcError(-32601, "Method not found", method)
        answer = await self._ask(method, params if isinstance(params, dict) else {})
        if "result" in answer:
            return answer["result"]
        error = answer.get("error") or {}
        raise RpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message", "")))

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A sampling / elicitation request from the upstream: whoever owns this client answers
        it (`on_ask(method, params) -> {"result": ...} | {"error": {code, message}}`)."""
        if self.on_ask is None:
            return {"error": {"code": -32600, "message": f"{method} is not supported here"}}
        return await self.on_ask(method, params)
