"""Upstream worker: one process per tool source instance (×`workers`). Owns one live MCP client
session (workers/mcp_client.py), or for a CLI tool or an OpenAPI import a local source behind the
same interface (workers/tool_source.py), and serves `upstream.<server>` on the bus.

Requests: `ToolCall` (tools/call) and `UpstreamRequest` (resources and prompts, passed through
as the MCP wire has them). While a call runs its progress and the upstream's log messages are
streamed as partials (`{"progress": ...}`, `{"log": ...}`, see bus/messages.py). A CANCEL from
the broker cancels the call's task, which sends `notifications/cancelled` upstream.

When the upstream announces a list change the worker re-lists its tools (tools/list_changed) or
counts the change (resources, prompts) and sends UPDATE, so front-ends see the new catalogue.

The process around it (start the upstream, claim a slot, restart it when it dies, its lifecycle
on the bus) is workers/upstream_run.py.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any, cast

from pydantic import ValidationError

from bus.errors import (
    bad_request,
    not_found,
    timed_out,
    unavailable,
    upstream_error,
    upstream_gone,
    upstream_timeout,
)
from bus.messages import (
    PASSTHROUGH_LISTS,
    PASSTHROUGH_METHODS,
    ToolCall,
    UpstreamLiveMeta,
    UpstreamRequest,
)
from bus.worker import BusWorker, Request
from mesh_config.model import McpServer
from mesh_config.sources import CliTool, OpenApiSource, SourceRef
from workers.mcp_client import UpstreamClient
from workers.tool_source import LocalSource, ToolRefused
from workers.upstream_types import (
    UpstreamClosed,
    UpstreamError,
    UpstreamGone,
    UpstreamSpec,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 1000


def spec_for(server: McpServer, default_cwd: str | None = None) -> UpstreamSpec:
    """stdio servers start in the config file's directory unless `cwd` says otherwise."""
    return UpstreamSpec(
        name=server.name,
        transport=server.transport,
        command=server.command,
        args=tuple(server.args),
        env=dict(server.env),
        cwd=server.cwd or default_cwd if server.transport == "stdio" else None,
        url=str(server.url) if server.url else None,
        headers=dict(server.headers),
    )


Source = UpstreamClient | LocalSource
Server = SourceRef | McpServer  # what the config says a tool source is


def source_for(ref: Server, default_cwd: str | None = None) -> Source:
    """The client of an MCP server, or the local adapter of a CLI tool or an OpenAPI import."""
    if isinstance(ref, McpServer):
        return UpstreamClient(spec_for(ref, default_cwd))
    if ref.kind == "cli":
        from workers.cli_source import CliSource

        return CliSource(cast(CliTool, ref.config))
    if ref.kind == "openapi":
        from workers.openapi_source import OpenApiToolSource

        return OpenApiToolSource(ref.name, cast(OpenApiSource, ref.config))
    return UpstreamClient(spec_for(ref.config, default_cwd))


class UpstreamService:
    def __init__(self, server: Server, client: Source) -> None:
        self.server = server
        self.client = client
        self.tool_names = {t["name"] for t in client.tools}
        self.in_flight: list[
            Request
        ] = []  # tool calls, oldest first: who answers an upstream's question
        self.session = uuid.uuid4().hex
        client.on_ask = self.ask

    def meta(self) -> dict[str, Any]:
        return UpstreamLiveMeta(
            server=self.server.name,
            tools=self.client.tools,
            server_info=self.client.server_info,
            pid=os.getpid(),
            upstream_pid=self.client.pid,
            session=self.session,
            list_changes=dict(self.client.list_changes),
        ).dump()

    async def handle(self, request: Request) -> Any:
        if isinstance(request.body, dict) and "method" in request.body:
            return await self._passthrough(request)
        try:
            call = ToolCall.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(
                f"{self.server.name}: invalid tool call: {exc.errors()[0]['msg']}"
            ) from None
        if call.tool not in self.tool_names and not self.client.knows(call.tool):
            raise not_found(f"unknown tool {self.server.name}.{call.tool}")
        timeout = self._timeout(call.timeout, request)

        async def progress(params: dict[str, Any]) -> None:
            request.partial({"progress": params})

        self.in_flight.append(request)
        started = time.time_ns()  # the upstream call's span (bus/PROTOCOL.md, Timings)
        try:
            # The trace context goes to a local source (an OpenAPI backend); an MCP upstream's
            # tools/call is passed on as the agent made it.
            meta = (
                {"traceparent": call.traceparent}
                if call.traceparent and isinstance(self.client, LocalSource)
                else None
            )
            return await self.client.call_tool(
                call.tool,
                call.arguments,
                timeout,
                on_progress=progress,
                on_log=_log_forwarder(request),
                meta=meta,
            )
        except UpstreamTimeout:
            raise upstream_timeout(f"{self.server.name}.{call.tool}", timeout) from None
        except UpstreamClosed as exc:  # never sent: the caller may retry (503, not 502)
            raise unavailable(str(exc)) from None
        except UpstreamGone as exc:
            raise upstream_gone(str(exc)) from None
        except UpstreamError as exc:  # the tool's own failure: the worker and its upstream are fine
            raise upstream_error(f"{self.server.name}.{call.tool}", exc.code, exc.message) from None
        except ToolRefused as exc:  # a local source refused the arguments: nothing ran
            raise bad_request(f"{self.server.name}.{call.tool}: {exc}") from None
        finally:
            request.add_meta(upstream_ns=[started, time.time_ns()])
            self.in_flight.remove(request)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The upstream asks its client (sampling, elicitation). MCP over stdio does not say which
        call the question belongs to: it goes to the agent of the most recent call in flight."""
        if not self.in_flight:
            return {
                "error": {"code": -32600, "message": f"{method}: no agent call in flight to ask"}
            }
        request = self.in_flight[-1]
        answer: dict[str, Any] = await request.ask(method, params, timeout=request.remaining)
        return answer

    async def _passthrough(self, request: Request) -> dict[str, Any]:
        try:
            call = UpstreamRequest.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(
                f"{self.server.name}: invalid request: {exc.errors()[0]['msg']}"
            ) from None
        if call.method not in PASSTHROUGH_METHODS:
            raise bad_request(
                f"{self.server.name}: {call.method!r} is not passed through "
                f"(one of {', '.join(sorted(PASSTHROUGH_METHODS))})"
            )
        timeout = self._timeout(call.timeout, request)

        async def progress(params: dict[str, Any]) -> None:
            request.partial({"progress": params})

        try:
            if call.method in PASSTHROUGH_LISTS:
                return {"result": await self._list_all(call.method, call.params, timeout)}
            result = await self.client.request(
                call.method,
                call.params,
                timeout,
                on_progress=progress if call.progress else None,
                on_log=_log_forwarder(request),
            )
            return {"result": result}
        except UpstreamError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            return {"error": error}
        except UpstreamTimeout:
            raise upstream_timeout(f"{self.server.name} ({call.method})", timeout) from None
        except UpstreamClosed as exc:
            raise unavailable(str(exc)) from None
        except UpstreamGone as exc:
            raise upstream_gone(str(exc)) from None

    async def _list_all(
        self, method: str, params: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Every page of a list method as one result (the first page's other keys kept)."""
        key = PASSTHROUGH_LISTS[method]
        params = {k: v for k, v in params.items() if k != "cursor"}
        merged: dict[str, Any] | None = None
        seen: set[str] = set()
        for _ in range(MAX_LIST_PAGES):
            page = await self.client.request(method, params or None, timeout)
            if merged is None:
                merged = {k: v for k, v in page.items() if k != "nextCursor"}
                merged[key] = list(page.get(key) or [])
            else:
                merged[key].extend(page.get(key) or [])
            cursor = page.get("nextCursor")
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
            params = {**params, "cursor": cursor}
        assert merged is not None
        return merged

    def _timeout(self, asked: float | None, request: Request) -> float:
        """The call's own timeout, bounded by the request's deadline; a passed deadline raises
        TIMEOUT (the caller has its answer already: the upstream is not asked at all)."""
        remaining = request.remaining
        if remaining <= 0:
            raise timed_out(
                f"upstream timeout: {self.server.name}: the request's deadline passed before the "
                "upstream was asked"
            )
        return min(asked or self.server.timeout_seconds, remaining)

    async def follow_list_changes(self, worker: BusWorker) -> None:
        """Re-list tools / count resources and prompts changes, and tell the broker (UPDATE)."""
        client = self.client
        while True:
            await client.list_changed.wait()
            client.list_changed.clear()
            if client.tools_changed.is_set():
                try:
                    await client.refresh_tools()
                except Exception as exc:  # noqa: BLE001 - keep the old list, keep serving
                    log.warning(
                        "%s: tools/list after tools/list_changed failed: %s", self.server.name, exc
                    )
                    continue
                self.tool_names = {t["name"] for t in client.tools}
                log.info("%s: tool list changed: %d tools", self.server.name, len(self.tool_names))
            worker.update_meta(self.meta())


def _log_forwarder(request: Request) -> Any:
    async def forward(params: dict[str, Any]) -> None:
        request.partial({"log": params})

    return forward
