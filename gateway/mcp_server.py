"""The MCP face of the mesh, shared by the stdio connector and Streamable HTTP `/mcp`: an MCP
server (official SDK, low-level API) whose `tools/list` is the catalogue plus virtual tools and
whose `tools/call` goes through the same `Pipeline` as REST (compat.md §4).

Tool lists and results pass through as raw dicts: a middleware answers `tools/list` and
`tools/call` itself, so the SDK never re-validates, drops or reorders what the upstream sent.
The same middleware answers resources and prompts (gateway/mcp_proxy.py: naming and policy).

What else passes through (compat.md §4):

- progress and upstream log messages (`notifications/message`) of a call reach its caller while
  the call runs, in order, related to the caller's request (gateway/mcp_forward.py); log messages
  are filtered by the level the session asked for with `logging/setLevel`, which the mesh accepts
  and records per session and does NOT forward (upstreams are shared by every agent);
- cancellation: the SDK cancels the handler on `notifications/cancelled`, the bus client sends
  CANCEL, the upstream worker cancels its call and sends `notifications/cancelled` upstream;
- list changes: when the catalogue's tools (or an upstream's resources / prompts) change, every
  initialized session gets `notifications/{tools,resources,prompts}/list_changed`.

Capabilities: `tools` always; `resources`, `prompts` and `logging` when at least one live
upstream advertises them (judged at `initialize`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib.metadata import version
from typing import Any

import mcp_types as types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError

from bus.errors import rpc_code
from bus.events import Subscriber
from bus.json_values import refusal
from gateway.call import TraceParent, parse_traceparent
from gateway.frontend import FrontEnd
from gateway.mcp_forward import LOG_LEVEL_KEY, Caller, forwarding, sdk_caller
from gateway.mcp_proxy import McpProxy
from gateway.mcp_sdk import connection
from gateway.mcp_virtual import VirtualTools, text_result
from gateway.stdio_lines import REFUSED

VERSION = version("agent-mesh")  # as installed, from pyproject.toml

log = logging.getLogger(__name__)

# (agent id, session id) of the caller of one request.
Identify = Callable[[ServerRequestContext[Any, Any]], tuple[str, str]]

# Proxied MCP methods → the upstream capability they need.
PROXIED = {
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "resources/read": "resources",
    "prompts/list": "prompts",
    "prompts/get": "prompts",
    "completion/complete": "completions",
    "resources/subscribe": "resources",
    "resources/unsubscribe": "resources",
}
_NOTIFY_TIMEOUT = 5.0  # s one list_changed notification may take to go out to one session


class MeshMcp:
    def __init__(self, frontend: FrontEnd, identify: Identify) -> None:
        self.frontend = frontend
        self.identify = identify
        config = frontend.loaded.config
        # Calls needing approval block in supervisor mode, and in transparent mode (no mesh tools
        # to resolve them with: a human does, with `mesh approve`).
        self.blocking = config.supervisor.enabled or config.transparent
        self.virtual = VirtualTools(frontend)
        self.proxy = McpProxy(frontend)
        self.sessions: set[ServerSession] = set()
        self.subscriptions: dict[str, set[ServerSession]] = {}  # resource URI → subscribed sessions
        self.owners: dict[str, str] = {}  # subscribed resource URI → the server subscribed to
        self._updates: asyncio.Task[None] | None = None  # initialized sessions, for list_changed
        self._background: set[asyncio.Task[None]] = set()
        # (session id, level) of each logging/setLevel: /mcp keeps it for its fast path.
        self.on_set_level: Callable[[str, str], None] | None = None
        frontend.catalog.add_listener(self._catalog_changed)
        frontend.catalog.add_worker_listener(self._renew_subscriptions)

    def build(self) -> Server[Any]:
        server = _MeshServer(
            "agent-mesh", version=VERSION, on_list_tools=self._unused, on_call_tool=self._unused
        )
        server.upstream_has = self.frontend.catalog.has
        server.upstream_subscribe = self.frontend.catalog.can_subscribe
        config = self.frontend.loaded.config
        if config.transparent and len(config.mcp_servers) == 1:
            only = config.mcp_servers[0].name
            server.upstream_info = lambda: self.frontend.catalog.servers[only].server_info
        server.middleware.append(self._passthrough)
        # Claude Code and most clients speak the initialize handshake; answering discover would
        # switch SDK clients to a protocol revision whose result shapes we would have to rewrite.
        server.add_request_handler("server/discover", types.RequestParams, _no_discover)
        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self._initialized
        )
        return server

    async def _unused(self, ctx: ServerRequestContext[Any, Any], params: Any) -> Any:
        raise AssertionError(
            "answered by the passthrough middleware"
        )  # registered for capabilities

    async def _passthrough(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]],
    ) -> Any:
        if ctx.method == REFUSED:  # a line the SDK could not take (gateway/stdio_lines.py)
            raise MCPError(
                types.INVALID_PARAMS, str((ctx.params or {}).get("message", "invalid request"))
            )
        if ctx.method == "tools/list":
            return {"tools": self.tools()}
        if ctx.method == "tools/call":
            return await self.tools_call(self.caller(ctx), ctx.params or {})
        if ctx.method in PROXIED:
            if not self.frontend.catalog.has(PROXIED[ctx.method]):
                raise MCPError(types.METHOD_NOT_FOUND, "Method not found", data=ctx.method)
            return await self._proxied(ctx, ctx.method, ctx.params or {})
        return await call_next(ctx)

    # -- tools/list --------------------------------------------------------------------------

    def tools(self) -> list[dict[str, Any]]:
        return self.frontend.catalog.exposed_tools() + self.virtual.listed()

    # -- tools/call --------------------------------------------------------------------------

    def caller(self, ctx: ServerRequestContext[Any, Any]) -> Caller:
        return sdk_caller(ctx, *self.identify(ctx))

    async def tools_call(self, caller: Caller, params: Mapping[str, Any]) -> Any:
        """A `tools/call`, whichever transport brought it (the SDK, or gateway/mcp_fast.py)."""
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise MCPError(
                types.INVALID_PARAMS, "tools/call needs a string 'name' and an object 'arguments'"
            )
        return await self.call_tool(caller, name, arguments)

    async def call_tool(self, caller: Caller, name: str, arguments: dict[str, Any]) -> Any:
        agent = caller.agent
        async with forwarding(caller, self.frontend.client.answer) as forward:
            if name in self.virtual:
                if (bad := refusal(arguments, "arguments")) is not None:
                    raise MCPError(types.INVALID_PARAMS, f"invalid {bad}")
                return await self.virtual.call(agent, name, arguments, forward.push)
            outcome = await self.frontend.pipeline.call_tool(
                agent,
                name,
                arguments,
                session_id=caller.session_id,
                on_progress=forward.push,
                wait_for_approval=self.blocking,
                parent=_trace_parent(caller),
                params_name="arguments",
            )
        if outcome.status == 200:
            return outcome.result
        # Arguments the bus cannot carry, no such tool. Arguments a tool source refused after the
        # policy allowed the call (a CLI flag outside allowed_args) are the tool's own error, for
        # the model to read and correct (MCP: input validation is a tool execution error).
        if outcome.status == 404 or outcome.status == 400 and not outcome.forwarded:
            raise MCPError(rpc_code(outcome.status), outcome.error)
        if outcome.status == 202:  # non-blocking approval: tell the agent how it gets resolved
            return text_result(
                f"{outcome.error}. Nothing has run yet: ask a human to run `mesh approve "
                f"{outcome.approval_id[:8]}`, then call approval.resolve with id "
                f"{outcome.approval_id[:8]} and decision approve to run it.",
                error=True,
                structured={"approval_id": outcome.approval_id, "status": "pending"},
            )
        return text_result(
            f"{outcome.error} (policy: {outcome.policy}, trace {outcome.trace_id})", error=True
        )

    # -- resources and prompts (gateway/mcp_proxy.py) ----------------------------------------

    async def _proxied(
        self, ctx: ServerRequestContext[Any, Any], method: str, params: Mapping[str, Any]
    ) -> Any:
        if method == "resources/list":
            return await self.proxy.list_resources()
        if method == "resources/templates/list":
            return await self.proxy.list_resource_templates()
        if method == "prompts/list":
            return await self.proxy.list_prompts()
        if method == "completion/complete":
            return await self.proxy.complete(params)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(ctx.session, method, params)
        caller = self.caller(ctx)
        agent, session_id = caller.agent, caller.session_id
        async with forwarding(caller) as forward:
            progress = forward.token is not None
            if method == "resources/read":
                uri = params.get("uri")
                if not isinstance(uri, str) or not uri:
                    raise MCPError(types.INVALID_PARAMS, "resources/read needs a string 'uri'")
                result = await self.proxy.read_resource(
                    agent, session_id, uri, on_partial=forward.push, progress=progress
                )
            else:
                name, arguments = params.get("name"), params.get("arguments") or {}
                if not isinstance(name, str) or not isinstance(arguments, dict):
                    raise MCPError(
                        types.INVALID_PARAMS,
                        "prompts/get needs a string 'name' and an object 'arguments'",
                    )
                if (bad := refusal(arguments, "arguments")) is not None:
                    raise MCPError(types.INVALID_PARAMS, f"invalid {bad}")
                result = await self.proxy.get_prompt(
                    agent, session_id, name, arguments, on_partial=forward.push, progress=progress
                )
        return result

    # -- resource subscriptions --------------------------------------------------------------

    async def _subscription(
        self, session: ServerSession, method: str, params: Mapping[str, Any]
    ) -> Any:
        """Sessions subscribe here; the owning upstream is subscribed once per URI (while anyone
        is), and its `notifications/resources/updated` come back as bus events to every
        front-end."""
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise MCPError(types.INVALID_PARAMS, f"{method} needs a string 'uri'")
        sessions = self.subscriptions.setdefault(uri, set())
        first, was = not sessions, session in sessions
        if method == "resources/subscribe":
            sessions.add(session)
            connection(session).exit_stack.callback(self._forget, session)
        else:
            sessions.discard(session)
        if (
            method == "resources/subscribe"
            and first
            or method == "resources/unsubscribe"
            and was
            and not sessions
        ):
            self.owners[uri] = await self.proxy.forward_to_owner(uri, method)
        if not sessions:
            del self.subscriptions[uri]
            self.owners.pop(uri, None)
        if self._updates is None and self.frontend.events_endpoint is not None:
            self._updates = asyncio.create_task(self._follow_updates(self.frontend.events_endpoint))
        return {}

    def _forget(self, session: ServerSession) -> None:
        for sessions in self.subscriptions.values():
            sessions.discard(session)

    def _renew_subscriptions(self, servers: set[str]) -> None:
        """A server's workers changed (one restarted, or its MCP server was replaced): the new
        upstream process knows none of our subscriptions, so subscribe again."""
        catalog = self.frontend.catalog
        for uri, owner in list(self.owners.items()):
            if owner in servers and catalog.servers[owner].up:  # (down: renewed when it is back)
                self._spawn(self._resubscribe(uri, owner))

    async def _resubscribe(self, uri: str, owner: str) -> None:
        try:
            await self.proxy.forward_to_owner(uri, "resources/subscribe")
        except Exception as exc:  # noqa: BLE001 - the next worker change tries again
            log.warning("renewing the subscription to %s on %s failed: %s", uri, owner, exc)

    async def _follow_updates(self, endpoint: str) -> None:
        subscriber = Subscriber(endpoint, "resource.")
        try:
            async for topic, body in subscriber:
                uri = body.get("uri") if isinstance(body, dict) else None
                if self.owners.get(str(uri)) != topic.split(".")[1]:
                    continue  # not subscribed, or not from the server it was subscribed on
                for session in list(self.subscriptions.get(str(uri), ())):
                    with contextlib.suppress(Exception):  # a session gone meanwhile
                        await session.send_resource_updated(str(uri))
        finally:
            subscriber.close()

    # -- logging/setLevel, sessions, list_changed --------------------------------------------

    async def _set_level(
        self, ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> Any:
        """Accepted and recorded for this session: upstream log messages below it are not
        forwarded to it. Not sent upstream: an upstream serves every agent of the mesh."""
        connection(ctx.session).state[LOG_LEVEL_KEY] = params.level
        if self.on_set_level is not None:
            self.on_set_level(self.identify(ctx)[1], params.level)
        return types.EmptyResult()

    async def _initialized(self, ctx: ServerRequestContext[Any, Any], params: Any) -> None:
        session = ctx.session
        self.sessions.add(session)
        connection(session).exit_stack.callback(self.sessions.discard, session)

    def _catalog_changed(self, kinds: set[str]) -> None:
        if not self.sessions:
            return
        self._spawn(self._notify_sessions(kinds))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run in the background, held until done (the loop keeps only weak references)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify_sessions(self, kinds: set[str]) -> None:
        catalog = self.frontend.catalog
        senders = [ServerSession.send_tool_list_changed] if "tools" in kinds else []
        if "resources" in kinds and catalog.has("resources"):
            senders.append(ServerSession.send_resource_list_changed)
        if "prompts" in kinds and catalog.has("prompts"):
            senders.append(ServerSession.send_prompt_list_changed)

        async def notify(session: ServerSession) -> None:
            try:
                for send in senders:
                    await asyncio.wait_for(send(session), _NOTIFY_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a session gone or stuck: the others still hear
                log.debug("list_changed not delivered to a session: %r", exc)

        await asyncio.gather(*(notify(session) for session in list(self.sessions)))


class _MeshServer(Server[Any]):
    upstream_has: Callable[[str], bool] = staticmethod(
        lambda capability: False
    )  # set by MeshMcp.build
    upstream_subscribe: Callable[[], bool] = staticmethod(lambda: False)  # set by MeshMcp.build
    # Transparent mode with one upstream: initialize answers with that upstream's identity.
    upstream_info: Callable[[], dict[str, Any]] | None = None

    # The HTTP session manager never passes initialization options: advertise list_changed here.
    def create_initialization_options(
        self, notification_options: Any = None, *args: Any, **kw: Any
    ) -> Any:
        if self.upstream_info is not None:
            info = self.upstream_info()
            server_info = info.get("serverInfo") or {}
            self.name = str(server_info.get("name") or self.name)
            self.version = str(server_info.get("version") or self.version)
            self.title = server_info.get("title")
            self.instructions = info.get("instructions")
        return super().create_initialization_options(
            notification_options
            or NotificationOptions(
                tools_changed=True, resources_changed=True, prompts_changed=True
            ),
            *args,
            **kw,
        )

    def get_capabilities(self, *args: Any, **kw: Any) -> types.ServerCapabilities:
        """Tools always; resources, prompts and logging only when a live upstream has them."""
        caps = super().get_capabilities(*args, **kw)
        has = self.upstream_has
        return caps.model_copy(
            update={
                "resources": types.ResourcesCapability(
                    subscribe=self.upstream_subscribe(), list_changed=True
                )
                if has("resources")
                else None,
                "prompts": types.PromptsCapability(list_changed=True) if has("prompts") else None,
                "logging": types.LoggingCapability() if has("logging") else None,
                "completions": types.CompletionsCapability() if has("completions") else None,
            }
        )


async def _no_discover(ctx: ServerRequestContext[Any, Any], params: Any) -> Any:
    raise MCPError(types.METHOD_NOT_FOUND, "Method not found")


def new_session_id() -> str:
    return uuid.uuid4().hex


def _trace_parent(caller: Caller) -> TraceParent | None:
    """The caller's W3C trace context: MCP `params._meta.traceparent`, else (over /mcp) the HTTP
    `traceparent` header."""
    meta = caller.params.get("_meta") or {}
    value = meta.get("traceparent") if isinstance(meta, dict) else None
    return parse_traceparent(value if isinstance(value, str) else caller.traceparent)
