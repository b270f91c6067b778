"""What flows back to the agent while one MCP request runs: the bus partials of its call become
`notifications/progress` (with the agent's own token) and `notifications/message` (at or above the
session's `logging/setLevel`), in order, before the result; an upstream's sampling / elicitation
request is put to the agent and its answer sent back over the bus (`BusClient.answer`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import TypeAdapter

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
LOG_LEVEL_KEY = "agent_mesh.log_level"  # in the SDK connection's per-connection `state`


def _min_log_level(ctx: ServerRequestContext[Any, Any]) -> int:
    level = ctx.session._connection.state.get(LOG_LEVEL_KEY)
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else 0


@contextlib.asynccontextmanager
async def forwarding(
    ctx: ServerRequestContext[Any, Any], answer: Callable[[int, Any], None] | None = None
) -> AsyncIterator[_Forwarder]:
    """A `_Forwarder` for the request of `ctx`: when the block ends every notification it took
    has gone out (before the result); if the client cancelled, nothing more goes out."""
    forward = _Forwarder(ctx, answer)
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
    """Bus partials of one call → its caller's MCP session, in the order they came, related to the
    caller's request: `notifications/progress` with the caller's own token (only if it gave one)
    and the upstream's `notifications/message` at or above the session's `logging/setLevel`."""

    def __init__(
        self, ctx: ServerRequestContext[Any, Any], answer: Callable[[int, Any], None] | None = None
    ) -> None:
        self.ctx = ctx
        self.answer = (
            answer  # BusClient.answer: questions the upstream asks (sampling, elicitation)
        )
        self.token: str | int | None = ((ctx.params or {}).get("_meta") or {}).get("progressToken")
        self.min_level = _min_log_level(ctx)
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
        session, request_id = self.ctx.session, self.ctx.request_id
        while (item := await self.queue.get()) is not None:
            kind, params = item
            with contextlib.suppress(Exception):  # a client gone mid-call must not fail the call
                if kind == "ask":
                    await self._ask(params)
                elif kind == "progress":
                    assert self.token is not None
                    await session.send_progress_notification(
                        self.token,
                        params.get("progress", 0),
                        params.get("total"),
                        params.get("message"),
                        related_request_id=request_id,  # type: ignore[arg-type]  # an int id works too
                    )
                else:
                    notification = types.LoggingMessageNotification(
                        params=types.LoggingMessageNotificationParams.model_validate(
                            params, by_name=False
                        )
                    )
                    await session.send_notification(notification, related_request_id=request_id)

    async def _ask(self, ask: dict[str, Any]) -> None:
        """An upstream's sampling or elicitation request during this call: put it to the agent
        (on this request's stream), and its answer (or error) back to the upstream."""
        assert self.answer is not None
        method, params = ask.get("method"), ask.get("params") or {}
        reply: dict[str, Any] = {"id": ask.get("id")}
        try:
            if method not in _ASKABLE:
                raise MCPError(types.METHOD_NOT_FOUND, f"{method} cannot be forwarded to the agent")
            request_type, params_type, result_type = _ASKABLE[method]
            result = await self.ctx.session.send_request(
                request_type(
                    params=params_type.validate_python(params, by_alias=True, by_name=False)
                ),
                result_type,
                metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id),
            )
            reply["result"] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
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
