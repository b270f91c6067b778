"""The MCP face of the mesh, shared by the stdio connector and Streamable HTTP `/mcp`: an MCP
server (official SDK, low-level API) whose `tools/list` is the catalogue plus virtual tools and
whose `tools/call` goes through the same `Pipeline` as REST (compat.md §4).

Tool lists and results pass through as raw dicts: a middleware answers `tools/list` and
`tools/call` itself, so the SDK never re-validates, drops or reorders what the upstream sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from agent_mesh import __version__
from gateway.frontend import FrontEnd
from policy.engine import PolicyEngine

log = logging.getLogger(__name__)

# (agent id, session id) of the caller of one request.
Identify = Callable[[ServerRequestContext[Any, Any]], tuple[str, str]]

_OBJECT = {"type": "object"}
VIRTUAL_TOOLS: dict[str, dict[str, Any]] = {
    "mesh.catalog": {
        "description": "Tools of every upstream server, grouped by server, with the policy action that "
                       "applies to you for each (allow / deny / human_approval).",
        "inputSchema": {"type": "object", "properties": {"source": {
            "type": "string", "description": "only this upstream server"}}},
    },
    "grant.create": {
        "description": "Create a temporary grant: calls to these tools that need approval are allowed.",
        "inputSchema": {"type": "object", "required": ["tools", "duration"], "properties": {
            "tools": {"type": "array", "items": {"type": "string"}},
            "duration": {"type": "string", "description": "e.g. 30m, 2h, 1h30m"}}},
    },
    "grant.list": {"description": "Active grants.", "inputSchema": _OBJECT},
    "grant.revoke": {
        "description": "Revoke a grant.",
        "inputSchema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
    },
    "approval.pending": {"description": "Calls waiting for human approval.", "inputSchema": _OBJECT},
    "approval.resolve": {
        "description": "Approve or deny a pending call; an approved call is replayed and its result returned.",
        "inputSchema": {"type": "object", "required": ["id", "decision"], "properties": {
            "id": {"type": "string"}, "decision": {"type": "string", "enum": ["approve", "deny"]}}},
    },
}
APPROVAL_TOOLS = {"approval.pending", "approval.resolve"}
NOT_BUILT = {"grant.create", "grant.list", "grant.revoke", "approval.pending", "approval.resolve"}


def text_result(text: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": error}


class MeshMcp:
    def __init__(self, frontend: FrontEnd, identify: Identify) -> None:
        self.frontend = frontend
        self.identify = identify
        config = frontend.loaded.config
        self.supervisor_mode = config.supervisor.enabled
        self.static_policy = PolicyEngine(config.policies)  # for mesh.catalog views only

    def build(self) -> Server[Any]:
        server = _MeshServer(
            "agent-mesh", version=__version__, on_list_tools=self._unused, on_call_tool=self._unused
        )
        server.middleware.append(self._passthrough)
        # Claude Code and most clients speak the initialize handshake; answering discover would
        # switch SDK clients to a protocol revision whose result shapes we would have to rewrite.
        server.add_request_handler("server/discover", types.RequestParams, _no_discover)
        return server

    async def _unused(self, ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
        raise AssertionError("answered by the passthrough middleware")  # registered for capabilities

    async def _passthrough(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]]
    ) -> Any:
        if ctx.method == "tools/list":
            return {"tools": self.tools()}
        if ctx.method == "tools/call":
            params = ctx.params or {}
            name, arguments = params.get("name"), params.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise MCPError(types.INVALID_PARAMS, "tools/call needs a string 'name' and an object 'arguments'")
            return await self.call_tool(ctx, name, arguments)
        return await call_next(ctx)

    # -- tools/list --------------------------------------------------------------------------

    def tools(self) -> list[dict[str, Any]]:
        out = []
        for view in self.frontend.catalog.servers.values():
            for name, tool in view.tools.items():
                out.append({**tool, "name": f"{view.name}.{name}"})
        for name, tool in VIRTUAL_TOOLS.items():
            if self.supervisor_mode and name in APPROVAL_TOOLS:
                continue  # an agent must not approve itself
            out.append({"name": name, **tool})
        return out

    # -- tools/call --------------------------------------------------------------------------

    async def call_tool(self, ctx: ServerRequestContext[Any, Any], name: str, arguments: dict[str, Any]) -> Any:
        agent, session_id = self.identify(ctx)
        if name in VIRTUAL_TOOLS:
            return self._virtual(agent, name, arguments)
        token = ((ctx.params or {}).get("_meta") or {}).get("progressToken")
        forward = _ProgressForwarder(ctx, token) if token is not None else None
        try:
            outcome = await self.frontend.pipeline.call_tool(
                agent, name, arguments, session_id=session_id,
                on_progress=forward.push if forward is not None else None,
            )
        finally:
            if forward is not None:
                await forward.close()  # every progress notification goes out before the result
        if outcome.status == 200:
            return outcome.result
        if outcome.status == 404:
            raise MCPError(types.INVALID_PARAMS, outcome.error)
        return text_result(f"{outcome.error} (policy: {outcome.policy}, trace {outcome.trace_id})", error=True)

    def _virtual(self, agent: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if name in APPROVAL_TOOLS and self.supervisor_mode:
            raise MCPError(types.METHOD_NOT_FOUND,
                           f"{name} is not available: supervisor mode is active (approvals are resolved "
                           "by the supervisor or a human, not by agents)")
        if name == "mesh.catalog":
            return self._catalog(agent, arguments.get("source"))
        assert name in NOT_BUILT
        return text_result(f"{name}: grants and approvals are not implemented yet in this agent-mesh; "
                           "nothing was changed", error=True)

    def _catalog(self, agent: str, source: Any) -> dict[str, Any]:
        servers: dict[str, list[dict[str, str]]] = {}
        for view in self.frontend.catalog.servers.values():
            if source and view.name != source:
                continue
            servers[view.name] = [
                {"tool": f"{view.name}.{tool}",
                 "action": self.static_policy.evaluate_static(agent, f"{view.name}.{tool}").action}
                for tool in view.tools
            ]
        structured = {"agent": agent, "servers": servers}
        lines = [f"{tool['tool']}: {tool['action']}" for tools in servers.values() for tool in tools]
        return {"content": [{"type": "text", "text": "\n".join(lines) or "no tools"}],
                "structuredContent": structured, "isError": False}


class _ProgressForwarder:
    """Bus partials → `notifications/progress` to the caller, in order, with the caller's own token."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], token: str | int) -> None:
        self.ctx = ctx
        self.token = token
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def push(self, partial: Any) -> None:
        if isinstance(partial, dict) and isinstance(partial.get("progress"), dict):
            self.queue.put_nowait(partial["progress"])

    async def _run(self) -> None:
        while (progress := await self.queue.get()) is not None:
            with contextlib.suppress(Exception):  # a client gone mid-call must not fail the call
                await self.ctx.session.send_progress_notification(
                    self.token, progress.get("progress", 0), progress.get("total"), progress.get("message"),
                    related_request_id=self.ctx.request_id,
                )

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await asyncio.shield(self.task)


class _MeshServer(Server[Any]):
    # The HTTP session manager never passes initialization options: advertise list_changed here.
    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kw: Any) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), *args, **kw
        )


async def _no_discover(ctx: ServerRequestContext[Any, Any], params: Any) -> Any:
    raise MCPError(types.METHOD_NOT_FOUND, "Method not found")


def new_session_id() -> str:
    return uuid.uuid4().hex
