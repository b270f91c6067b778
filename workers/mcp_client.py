"""One live MCP client session to one upstream MCP server.

An `UpstreamClient` owns, for its lifetime: the transport (a spawned stdio
server and its whole process group, or an SSE / streamable-HTTP connection),
the SDK `ClientSession` over it, the upstream's `server_info` and `tools`, and
the routing of progress and log notifications back to the calls that asked for
them.

Results cross this boundary as MCP wire dicts, exactly as the upstream sent
them (the raw JSON-RPC `result`, never re-serialised through pydantic), and
every failure is one of `UpstreamError`, `UpstreamTimeout` or `UpstreamGone`.
`closed` is set as soon as the upstream exits or the connection drops, so the
owning worker can notice and exit or restart.

Log messages (`notifications/message`): the MCP client SDK does not tell which
request one relates to (stdio has no such thing on the wire, and the HTTP
transports do not keep the stream it came on), so each is delivered to every
call in flight that passed `on_log`, at the moment it arrives; with none in
flight it goes to the SDK's default handling (dropped). List changes
(`notifications/{tools,resources,prompts}/list_changed`) set `list_changed`;
tools also set `tools_changed`, the other kinds count in `list_changes`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], Awaitable[None]]
LogCallback = Callable[[dict[str, Any]], Awaitable[None]]
TRANSPORTS = frozenset({"stdio", "sse", "streamable_http", "http"})
_CLIENT_INFO = types.Implementation(name="agent-mesh", version="0.1.0")
_EXIT_POLL = 0.05  # s between liveness polls of the stdio child
_STOP_GRACE = 2.0  # s a stdio server gets to exit after its stdin closes
_MAX_TOOL_PAGES = 1000


class UpstreamException(Exception):
    """Base of everything `UpstreamClient` raises for upstream trouble."""


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

    def push(self, callback: Callable[[dict[str, Any]], Awaitable[None]], params: dict[str, Any]) -> None:
        # Runs on the dispatcher's read loop, which must never wait on a user
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


class _Tap:
    """Read stream between the transport and the SDK dispatcher.

    It is the one place that sees every inbound message in wire order and sees
    the stream end, whatever the transport: that end is how a dropped
    connection is noticed, and our calls' progress is taken here raw.
    """

    def __init__(self, inner: Any, client: UpstreamClient) -> None:
        self._inner, self._client = inner, client

    @property
    def last_context(self) -> Any:  # the HTTP transports' per-message contextvars
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        while True:
            try:
                item: SessionMessage | Exception = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._client._lost("connection closed")
                raise
            if not isinstance(item, SessionMessage) or not isinstance(
                item.message, types.JSONRPCNotification
            ):
                return item
            if not self._client._intercept(item.message.method, item.message.params):
                return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _as_upstream(exc: BaseException | None, what: str) -> UpstreamException:
    if isinstance(exc, UpstreamException):
        return exc
    if isinstance(exc, MCPError):
        return UpstreamError(exc.code, exc.message, exc.data)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{what}: timed out")
    gone = UpstreamGone(f"{what}: {exc!r}" if exc else what)
    gone.__cause__ = exc
    return gone


class UpstreamClient:
    """A live MCP session to one upstream; use `async with` or `start()`/`close()`."""

    def __init__(self, spec: UpstreamSpec, *, connect_timeout: float = 30.0) -> None:
        self.spec = spec
        self.connect_timeout = connect_timeout  # initialize + tools/list, each page
        self.tools: list[dict[str, Any]] = []
        self.server_info: dict[str, Any] = {}
        self.pid: int | None = None  # stdio only: leader of the server's process group
        self.closed = asyncio.Event()
        self.tools_changed = asyncio.Event()  # set on notifications/tools/list_changed
        self.list_changed = asyncio.Event()  # set on any notifications/*/list_changed
        self.list_changes: dict[str, int] = {"resources": 0, "prompts": 0}  # how many of each
        self._scope: anyio.CancelScope | None = None  # cancelling it tears the session down
        self._stopping = False
        self._dispatcher: JSONRPCDispatcher[Any] | None = None
        self._headers: dict[str, str] = {}
        self._sinks: dict[str, _CallSink] = {}  # by our progress token
        self._log_sinks: set[_CallSink] = set()  # in-flight calls that want log messages
        self._bg: set[asyncio.Task[None]] = set()
        self._tokens = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        # Hears notifications/resources/updated (for subscriptions; set by the owning worker).
        self.on_resource_updated: Callable[[dict[str, Any]], None] | None = None
        # Answers the upstream's sampling / elicitation requests (set by the owning worker).
        self.on_ask: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def _sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._ask("sampling/createMessage", params, types.CreateMessageResult)

    async def _elicitation(self, context: Any, params: Any) -> Any:
        return await self._ask("elicitation/create", params, types.ElicitResult)

    async def _ask(self, method: str, params: Any, result_type: Any) -> Any:
        """A server-to-client request from the upstream: whoever owns this client answers it
        (`on_ask(method, params) -> {"result": ...} | {"error": {code, message}}`)."""
        if self.on_ask is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"{method} is not supported here")
        answer = await self.on_ask(method, params.model_dump(by_alias=True, exclude_none=True, mode="json"))
        if "result" in answer:
            return result_type.model_validate(answer["result"], by_name=False)
        error = answer.get("error") or {}
        return types.ErrorData(code=int(error.get("code", types.INTERNAL_ERROR)), message=str(error.get("message", "")))

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Spawn/connect, initialize and list tools; raises an `UpstreamException` on failure."""
        if self._task is not None:
            raise RuntimeError("UpstreamClient can only be started once")
        self._started = asyncio.get_running_loop().create_future()
        self._scope = anyio.CancelScope()
        # The session lives in its own task: anyio scopes must be exited by the
        # task that entered them, and this way any task may call or close.
        self._task = asyncio.create_task(self._run(), name=f"upstream:{self.spec.name}")
        try:
            await asyncio.shield(self._started)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._stop()
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._started is not None and self._started.done() and not self._started.cancelled():
            self._started.exception()  # mark retrieved: start() may have been abandoned

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
        return await self.request("tools/call", params, timeout, on_progress=on_progress, on_log=on_log)

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
            token = f"{self.spec.name}/{next(self._tokens)}"  # ours, so we can route without the SDK
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
                raise UpstreamError(types.INTERNAL_ERROR, f"tools/list repeated cursor {cursor!r}")
            seen.add(cursor)
        self.tools = tools
        return tools

    async def _request(
        self, method: str, params: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        disp = self._dispatcher
        if disp is None or self.closed.is_set():
            raise UpstreamGone(f"upstream {self.spec.name!r} is closed")
        # Straight to the dispatcher, not session.call_tool: that path re-validates
        # into pydantic models (and against outputSchema); we forward raw dicts.
        opts: CallOptions = {"timeout": timeout}
        if self._headers:
            opts["headers"] = dict(self._headers)  # what the session's stamp adds over HTTP
        t0 = anyio.current_time()
        try:
            return await disp.send_raw_request(method, params, opts)
        except MCPError as e:
            # The dispatcher's own "connection closed" (its read loop ended, for good),
            # as opposed to a server that happens to answer with code -32000.
            lost = e.message == "Connection closed" or self.closed.is_set() or self._stopping
            if e.code == types.CONNECTION_CLOSED and lost:
                self._lost("connection closed")
                raise UpstreamGone(
                    f"upstream {self.spec.name!r} went away during {method}"
                ) from None
            if e.code == types.REQUEST_TIMEOUT and anyio.current_time() - t0 >= timeout:
                raise UpstreamTimeout(
                    f"{method} to {self.spec.name!r} timed out after {timeout}s"
                ) from None
            raise UpstreamError(e.code, e.message, e.data) from None

    def _stop(self) -> None:
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    def _lost(self, why: str) -> None:
        if not self.closed.is_set():
            if not self._stopping:
                log.warning("upstream %r: %s", self.spec.name, why)
            self.closed.set()
        self._stop()

    def _intercept(self, method: str, params: dict[str, Any] | None) -> bool:
        """Take our calls' progress and log messages off the wire; True means consumed."""
        if method == "notifications/progress" and params is not None and self._sinks:
            token = params.get("progressToken")
            sink = self._sinks.get(token) if isinstance(token, str) else None
            if sink is not None and sink.on_progress is not None:
                sink.push(sink.on_progress, params)
                return True
        elif method == "notifications/message" and isinstance(params, dict) and self._log_sinks:
            for sink in self._log_sinks:  # not related to a request by the SDK: every call in flight
                assert sink.on_log is not None
                sink.push(sink.on_log, params)
            return True
        elif method == "notifications/resources/updated" and isinstance(params, dict):
            if self.on_resource_updated is not None:
                self.on_resource_updated(params)
        elif method == "notifications/tools/list_changed":
            self.tools_changed.set()
            self.list_changed.set()
        elif method in ("notifications/resources/list_changed", "notifications/prompts/list_changed"):
            kind = method.split("/")[1]
            self.list_changes[kind] += 1
            self.list_changed.set()
        return False

    async def _run(self) -> None:
        assert self._started is not None and self._scope is not None
        error: BaseException | None = None
        try:
            with self._scope:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._open_transport())
                    self._dispatcher = JSONRPCDispatcher(_Tap(read, self), write)
                    session = ClientSession(
                        dispatcher=self._dispatcher,
                        client_info=_CLIENT_INFO,
                        message_handler=self._on_message,
                        # Advertised so upstreams may ask; answered by the calling agent (on_ask).
                        sampling_callback=self._sampling,
                        elicitation_callback=self._elicitation,
                    )
                    await stack.enter_async_context(session)
                    with anyio.fail_after(self.connect_timeout):
                        init = await session.initialize()
                    if self.spec.transport != "stdio":
                        self._headers = {MCP_PROTOCOL_VERSION_HEADER: init.protocol_version}
                    self.server_info = init.model_dump(
                        by_alias=True, mode="json", exclude_unset=True
                    )
                    await self.refresh_tools()
                    self._started.set_result(None)
                    await anyio.sleep_forever()
        except Exception as exc:  # noqa: BLE001 - reported through start() or, once running, logged
            error = exc
            if self._started.done():
                log.warning("upstream %r: session ended: %r", self.spec.name, exc)
        finally:
            self.closed.set()
            if not self._started.done():
                self._started.set_exception(
                    _as_upstream(error, f"upstream {self.spec.name!r} failed to start")
                )

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):  # e.g. an unparseable line from the server
            log.warning("upstream %r: transport error: %r", self.spec.name, message)

    def _open_transport(self) -> AbstractAsyncContextManager[tuple[Any, Any]]:
        spec = self.spec
        if spec.transport == "stdio":
            return self._stdio()
        assert spec.url is not None
        if spec.transport == "sse":
            return sse_client(spec.url, headers=dict(spec.headers))
        return self._http(spec.url)

    @asynccontextmanager
    async def _http(self, url: str) -> AsyncIterator[tuple[Any, Any]]:
        # Headers go on our own httpx2 client, the SDK's documented way; same
        # timeouts as its default client (30 s, 300 s to read a stream).
        timeout = httpx2.Timeout(30.0, read=300.0)
        async with (
            httpx2.AsyncClient(headers=dict(self.spec.headers), timeout=timeout) as http,
            streamable_http_client(url, http_client=http) as streams,
        ):
            yield streams

    @asynccontextmanager
    async def _stdio(self) -> AsyncIterator[tuple[Any, Any]]:
        # Our own stdio transport, not mcp.client.stdio: that one hides the
        # process, and only watches stdout EOF, which never comes when a wrapper
        # (npx -> sh -> node) dies but its child still holds the pipe.
        spec = self.spec
        assert spec.command is not None
        proc = await anyio.open_process(
            [spec.command, *spec.args],
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            stderr=None,  # inherit our fd 2: nothing to drain, nothing to block on
            start_new_session=True,
        )  # own process group, so the whole tree can be killed
        self.pid = proc.pid
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        read_tx, read_rx = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_tx, write_rx = anyio.create_memory_object_stream[SessionMessage](0)

        async def pump_out() -> None:
            parts: list[bytes] = []
            async with read_tx:
                with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    async for chunk in stdout:
                        *lines, rest = chunk.split(b"\n")
                        if lines:
                            lines[0] = b"".join((*parts, lines[0]))
                            parts.clear()
                            for line in lines:
                                if line.strip():
                                    await read_tx.send(_parse_line(line))
                        if rest:
                            parts.append(rest)

        async def pump_in() -> None:
            try:
                async with write_rx:
                    async for msg in write_rx:
                        data = msg.message.model_dump_json(by_alias=True, exclude_unset=True)
                        await stdin.send(data.encode() + b"\n")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await stdout.aclose()  # can't write to it any more: treat it as gone

        async def watch() -> None:
            # Poll, not proc.wait(): on 3.11 that also waits for pipe EOF.
            while proc.returncode is None:
                await anyio.sleep(_EXIT_POLL)
            await stdout.aclose()  # orphans may hold stdout open; end the reader anyway
            self._lost(f"process {proc.pid} exited with {proc.returncode}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_out)
            tg.start_soon(pump_in)
            tg.start_soon(watch)
            try:
                yield read_rx, write_tx
            finally:
                with anyio.CancelScope(shield=True):
                    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await stdin.aclose()  # MCP shutdown: close stdin, then signal
                    with anyio.move_on_after(_STOP_GRACE):
                        while proc.returncode is None:
                            await anyio.sleep(_EXIT_POLL)
                    await terminate_posix_process_tree(proc, 1.0)  # also reaps orphans
                    await stdout.aclose()
                    with anyio.move_on_after(1.0):
                        await proc.wait()
                    read_rx.close()
                    write_tx.close()
                    tg.cancel_scope.cancel()


def _parse_line(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # surfaced to the session, which logs it via _on_message
        return exc
