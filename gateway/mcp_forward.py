"""What flows back to the agent while one MCP request runs: the bus partials of its call become
`notifications/progress` (with the agent's own token) and `notifications/message` (at or above the
session's `logging/setLevel`), in order, before the result; an upstream's sampling / elicitation
request is put to the agent and its answer sent back over the bus (`BusClient.answer`).

Where those messages go is the request's `Outlet`: its SDK session (`SdkOutlet`), or the
response the /mcp fast path writes itself (gateway/mcp_fast.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import TypeAdapter

from gateway.mcp_sdk import connection

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
LOG_LEVEL_KEY = "agent_mesh.log_level"  # in the SDK connection's per-connection `state`


class Outlet(Protocol):
    """Where one request's messages to its caller go: the SDK session (stdio, and /mcp requests
    the SDK serves) or the /mcp fast path's own response (gateway/mcp_fast.py)."""

    async def progress(self, params: dict[str, Any]) -> None: ...
    async def log(self, params: dict[str, Any]) -> None: ...
    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Put a server-to-client request to the caller; its result, or MCPError."""
        ...


@dataclass
class Caller:
    """One MCP request as the mesh needs it, whichever transport carried it."""

    agent: str
    session_id: str
    params: Mapping[str, Any]  # the request's params (`_meta`: progress token, traceparent)
    outlet: Outlet
    min_log_level: int = 0  # index in LOG_LEVELS, from the session's logging/setLevel
    traceparent: str | None = None  # the HTTP `traceparent` header (/mcp)

    @property
    def progress_token(self) -> str | int | None:
        meta = self.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def level_index(level: object) -> int:
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else 0


@contextlib.asynccontextmanager
async def forwarding(
    caller: Caller, answer: Callable[[int, Any], None] | None = None
) -> AsyncIterator[_Forwarder]:
    """A `_Forwarder` for the request of `caller`: when the block ends every notification it took
    has gone out (before the result); if the client cancelled, nothing more goes out."""
    forward = _Forwarder(caller, answer)
    cancelled = False
    try:
        yield forward
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if cancelled:
            forward.cancel()
        else:
            await forward.close()


class _Forwarder:
    """Bus partials of one call → its caller, in the order they came, related to the caller's
    request: `notifications/progress` with the caller's own token (only if it gave one) and the
    upstream's `notifications/message` at or above the session's `logging/setLevel`."""

    def __init__(self, caller: Caller, answer: Callable[[int, Any], None] | None = None) -> None:
        self.caller = caller
        self.answer = (
            answer  # BusClient.answer: questions the upstream asks (sampling, elicitation)
        )
        self.token = caller.progress_token
        self.min_level = caller.min_log_level
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None  # started by the first notification

    def push(self, partial: Any) -> None:
        if not isinstance(partial, dict):
            return
        if isinstance(partial.get("progress"), dict):
            if self.token is None:
                return
            item = ("progress", partial["progress"])
        elif isinstance(partial.get("ask"), dict) and self.answer is not None:
            item = ("ask", partial["ask"])
        elif isinstance(partial.get("log"), dict):
            level = partial["log"].get("level")
            if level not in LOG_LEVELS or LOG_LEVELS.index(level) < self.min_level:
                return
            item = ("log", partial["log"])
        else:
            return
        self.queue.put_nowait(item)
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        outlet = self.caller.outlet
        while (item := await self.queue.get()) is not None:
            kind, params = item
            with contextlib.suppress(Exception):  # a client gone mid-call must not fail the call
                if kind == "ask":
                    await self._ask(params)
                elif kind == "progress":
                    await outlet.progress(
                        {
                            "progressToken": self.token,
                            "progress": params.get("progress", 0),
                            **{k: params[k] for k in ("total", "message") if k in params},
                        }
                    )
                else:
                    await outlet.log(params)

    async def _ask(self, ask: dict[str, Any]) -> None:
        """An upstream's sampling or elicitation request during this call: put it to the agent
        (on this request's stream), and its answer (or error) back to the upstream."""
        assert self.answer is not None
        method, params = ask.get("method"), ask.get("params") or {}
        reply: dict[str, Any] = {"id": ask.get("id")}
        try:
            if method not in _ASKABLE:
                raise MCPError(types.METHOD_NOT_FOUND, f"{method} cannot be forwarded to the agent")
            reply["result"] = await self.caller.outlet.ask(method, params)
        except MCPError as exc:
            reply["error"] = {"code": exc.error.code, "message": exc.error.message}
        except Exception as exc:  # noqa: BLE001 — whatever went wrong, the upstream gets an error, never a hang
            reply["error"] = {
                "code": -32603,
                "message": f"{method}: the agent could not answer: {exc}",
            }
        self.answer(int(ask["bus_id"]), reply)

    async def close(self) -> None:
        if self.task is not None:
            self.queue.put_nowait(None)
            await asyncio.shield(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class SdkOutlet:
    """The SDK session of a request (`ServerRequestContext`): messages ride its request's stream."""

    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self.ctx = ctx

    async def progress(self, params: dict[str, Any]) -> None:
        await self.ctx.session.send_progress_notification(
            params["progressToken"],
            params["progress"],
            params.get("total"),
            params.get("message"),
            related_request_id=self.ctx.request_id,  # type: ignore[arg-type]  # an int id works too
        )

    async def log(self, params: dict[str, Any]) -> None:
        notification = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams.model_validate(params, by_name=False)
        )
        await self.ctx.session.send_notification(
            notification, related_request_id=self.ctx.request_id
        )

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_type, params_type, result_type = _ASKABLE[method]
        result = await self.ctx.session.send_request(
            request_type(params=params_type.validate_python(params, by_alias=True, by_name=False)),
            result_type,
            metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id),
        )
        dumped: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        return dumped


def sdk_caller(ctx: ServerRequestContext[Any, Any], agent: str, session_id: str) -> Caller:
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    return Caller(
        agent,
        session_id,
        ctx.params or {},
        SdkOutlet(ctx),
        level_index(connection(ctx.session).state.get(LOG_LEVEL_KEY)),
        headers.get("traceparent") if headers is not None else None,
    )


# Server-to-client requests an upstream may make during a call, forwarded to the calling agent.
_ASKABLE: dict[str, tuple[Any, Any, Any]] = {
    "sampling/createMessage": (
        types.CreateMessageRequest,
        TypeAdapter(types.CreateMessageRequestParams),
        types.CreateMessageResult,
    ),
    "elicitation/create": (
        types.ElicitRequest,
        TypeAdapter(types.ElicitRequestParams),
        types.ElicitResult,
    ),
}
