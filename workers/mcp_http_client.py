"""An MCP client session over SSE or streamable HTTP, on the official SDK (imported only here).

`UpstreamClient` (workers/mcp_client.py) uses it for its HTTP transports the way it uses
`StdioPeer` for stdio: `request()` returns the raw result dict as the upstream sent it and
raises `RpcError`, `TimeoutError` or `PeerGone`; the upstream's notifications go to
`on_notification` (True: consumed, the SDK does not see it), its sampling and elicitation
requests to `ask`, and the connection dropping calls `on_gone`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage

from workers.stdio_rpc import PeerGone, RpcError

if TYPE_CHECKING:
    from workers.upstream_types import UpstreamSpec

log = logging.getLogger(__name__)

Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class _Tap:
    """Read stream between the transport and the SDK dispatcher.

    It is the one place that sees every inbound message in wire order and sees
    the stream end: that end is how a dropped connection is noticed, and our
    calls' progress and log messages are taken here raw.
    """

    def __init__(self, inner: Any, session: HttpSession) -> None:
        self._inner, self._session = inner, session

    @property
    def last_context(self) -> Any:  # the HTTP transports' per-message contextvars
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        while True:
            try:
                item: SessionMessage | Exception = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._session.lost("connection closed")
                raise
            if not isinstance(item, SessionMessage) or not isinstance(
                item.message, types.JSONRPCNotification
            ):
                return item
            if not self._session.on_notification(item.message.method, item.message.params):
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


class HttpSession:
    """The SDK session lives in its own task: anyio scopes must be exited by the task that
    entered them, and this way any task may call or close."""

    def __init__(
        self,
        spec: UpstreamSpec,
        *,
        connect_timeout: float,
        client_info: dict[str, str],
        on_notification: Callable[[str, Any], bool],
        ask: Ask,
        on_gone: Callable[[], object],
    ) -> None:
        self.spec, self.on_notification = spec, on_notification
        self._connect_timeout, self._ask, self._on_gone = connect_timeout, ask, on_gone
        self._client_info = types.Implementation(
            name=client_info["name"], version=client_info["version"]
        )
        self._scope = anyio.CancelScope()  # cancelling it tears the session down
        self._ended = False  # close() was called, or the connection is gone
        self._dispatcher: JSONRPCDispatcher[Any] | None = None
        self._headers: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[dict[str, Any]] | None = None

    async def open(self) -> dict[str, Any]:
        """Connect and initialize; returns the initialize result."""
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"upstream:{self.spec.name}")
        return await asyncio.shield(self._started)

    async def close(self) -> None:
        self._ended = True
        self._scope.cancel()
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._started is not None and self._started.done() and not self._started.cancelled():
            self._started.exception()  # mark retrieved: open() may have been abandoned

    async def request(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        disp = self._dispatcher
        if disp is None:
            raise PeerGone("not connected")
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
            lost = e.message == "Connection closed" or self._ended
            if e.code == types.CONNECTION_CLOSED and lost:
                self.lost("connection closed")
                raise PeerGone("connection closed") from None
            if e.code == types.REQUEST_TIMEOUT and anyio.current_time() - t0 >= timeout:
                raise TimeoutError from None
            raise RpcError(e.code, e.message, e.data) from None

    def lost(self, why: str) -> None:
        if not self._ended:
            log.warning("upstream %r: %s", self.spec.name, why)
        self._ended = True
        self._on_gone()
        self._scope.cancel()

    async def _run(self) -> None:
        assert self._started is not None
        error: BaseException | None = None
        try:
            with self._scope:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._transport())
                    self._dispatcher = JSONRPCDispatcher(_Tap(read, self), write)
                    session = ClientSession(
                        dispatcher=self._dispatcher,
                        client_info=self._client_info,
                        message_handler=self._on_message,
                        # Advertised so upstreams may ask; answered by the calling agent (ask).
                        sampling_callback=self._sampling,
                        elicitation_callback=self._elicitation,
                    )
                    await stack.enter_async_context(session)
                    with anyio.fail_after(self._connect_timeout):
                        init = await session.initialize()
                    self._headers = {MCP_PROTOCOL_VERSION_HEADER: init.protocol_version}
                    self._started.set_result(
                        init.model_dump(by_alias=True, mode="json", exclude_unset=True)
                    )
                    await anyio.sleep_forever()
        except Exception as exc:  # noqa: BLE001 - reported through open() or, once running, logged
            error = exc
            if self._started.done():
                log.warning("upstream %r: session ended: %r", self.spec.name, exc)
        finally:
            self._on_gone()
            if not self._started.done():
                self._started.set_exception(_start_error(error, self.spec.url or ""))

    def _transport(self) -> AbstractAsyncContextManager[tuple[Any, Any]]:
        assert self.spec.url is not None
        if self.spec.transport == "sse":
            return sse_client(self.spec.url, headers=dict(self.spec.headers))
        return self._streamable_http(self.spec.url)

    @asynccontextmanager
    async def _streamable_http(self, url: str) -> AsyncIterator[tuple[Any, Any]]:
        # Headers go on our own httpx2 client, the SDK's documented way; same
        # timeouts as its default client (30 s, 300 s to read a stream).
        timeout = httpx2.Timeout(30.0, read=300.0)
        async with (
            httpx2.AsyncClient(headers=dict(self.spec.headers), timeout=timeout) as http,
            streamable_http_client(url, http_client=http) as streams,
        ):
            yield streams

    async def _sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._relay("sampling/createMessage", params, types.CreateMessageResult)

    async def _elicitation(self, context: Any, params: Any) -> Any:
        return await self._relay("elicitation/create", params, types.ElicitResult)

    async def _relay(self, method: str, params: Any, result_type: Any) -> Any:
        answer = await self._ask(
            method, params.model_dump(by_alias=True, exclude_none=True, mode="json")
        )
        if "result" in answer:
            return result_type.model_validate(answer["result"], by_name=False)
        error = answer.get("error") or {}
        return types.ErrorData(
            code=int(error.get("code", types.INTERNAL_ERROR)), message=str(error.get("message", ""))
        )

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):  # e.g. an unparseable message from the server
            log.warning("upstream %r: transport error: %r", self.spec.name, message)


def _start_error(exc: BaseException | None, url: str) -> Exception:
    leaf = _leaf(exc) if exc is not None else None
    if isinstance(leaf, MCPError):
        return RpcError(leaf.code, leaf.message, leaf.data)
    if isinstance(leaf, TimeoutError):
        return TimeoutError()
    gone = PeerGone(_said(leaf, url) if leaf is not None else "session ended")
    gone.__cause__ = exc
    return gone


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the task groups the SDK's transports wrap it in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _said(exc: BaseException, url: str) -> str:
    """`ConnectError: All connection attempts failed (<url>)`; an HTTP error as its status."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} from {url}"
    text = (
        str(exc) or "no answer"
    )  # (httpx's ReadError for a connection closed at once says nothing)
    return f"{type(exc).__name__}: {text} ({url})"
