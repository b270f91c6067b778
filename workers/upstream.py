"""Upstream worker: one process per tool source instance (×`workers`). Owns one live MCP client
session (workers/mcp_client.py), or for a CLI tool or an OpenAPI import a local source behind the
same interface (workers/tool_source.py), and serves `upstream.<server>` on the bus.

Requests: `ToolCall` (tools/call) and `UpstreamRequest` (resources and prompts, passed through
as the MCP wire has them). While a call runs its progress and the upstream's log messages are
streamed as partials (`{"progress": ...}`, `{"log": ...}`, see bus/messages.py). A CANCEL from
the broker cancels the call's task, which sends `notifications/cancelled` upstream.

When the upstream announces a list change the worker re-lists its tools (tools/list_changed) or
counts the change (resources, prompts) and sends UPDATE, so front-ends see the new catalogue.

When the upstream dies the worker starts a new one in-process (a warm spare serves the slot
meanwhile); one that keeps failing is retried with a back-off, its reason on the bus meanwhile
(workers/upstream_down.py). A killed worker is restarted by supervisord; meanwhile the broker
answers its in-flight calls with a clear error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from bus.errors import (
    bad_request,
    not_found,
    timed_out,
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
    upstream_service,
)
from bus.worker import BusWorker, Request
from mesh_config.model import McpServer
from mesh_config.sources import CliTool, OpenApiSource, SourceRef
from workers.mcp_client import UpstreamClient
from workers.tool_source import LocalSource, ToolRefused
from workers.upstream_down import Backoff, DownReport
from workers.upstream_slots import SlotClaim, candidates
from workers.upstream_types import UpstreamError, UpstreamGone, UpstreamSpec, UpstreamTimeout

log = logging.getLogger(__name__)

CAPACITY = 64  # concurrent calls per worker: one MCP session multiplexes them
PING_INTERVAL = 2.0  # s between pings of a remote (sse, streamable_http) upstream
PING_TIMEOUT = 5.0
MAX_LIST_PAGES = 1000
DRAIN = 0.5  # s the calls of a dead upstream get to answer before the worker leaves the bus


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


def source_for(ref: SourceRef | McpServer, default_cwd: str | None = None) -> Source:
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
    def __init__(self, server: McpServer | SourceRef, client: Source) -> None:
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


async def run(
    endpoint: str,
    server: SourceRef | McpServer,
    slot: int,
    default_cwd: str | None = None,
    slots_dir: Path | None = None,
) -> int:
    """Start an upstream, then serve a slot of this server (workers/upstream_slots.py): the slot
    `slot` if free, else any free one, else wait for one as the warm spare. When the upstream MCP
    server dies the slot is released at once (a spare takes it) and a new upstream is started in
    this process, which then claims a slot again. One that fails to start or dies soon after is
    started again after a back-off (1 s, 2 s, 4 s… 30 s), its reason on the bus meanwhile
    (workers/upstream_down.py). Runs until cancelled. Without `slots_dir` the process serves
    `slot`, no claim (tests)."""
    claim = (
        SlotClaim(slots_dir, server.name, candidates(slot, server.workers)) if slots_dir else None
    )
    backoff = Backoff()
    down = DownReport(endpoint, server.name, f"{server.name}:{slot}")
    try:
        while True:
            started = time.monotonic()
            reason = await _serve_once(endpoint, server, slot, default_cwd, claim, down)
            delay = backoff.after(time.monotonic() - started)
            if not delay:
                log.warning("%s: upstream stopped (%s); starting a new one", server.name, reason)
                continue
            log.error(
                "%s: %s; next start in %gs (%d failed in a row)",
                server.name,
                reason,
                delay,
                backoff.failures,
            )
            down.say(reason, delay, backoff)
            await asyncio.sleep(delay)
    finally:
        await down.clear()


async def _serve_once(
    endpoint: str,
    server: SourceRef | McpServer,
    slot: int,
    default_cwd: str | None,
    claim: SlotClaim | None,
    down: DownReport,
) -> str:
    """Start an upstream; serve a slot with it until it dies (or fails to start). Returns why
    it stopped (`command 'x' not found on PATH`, `exited with code 1: ...`)."""
    try:
        client = source_for(server, default_cwd)
        await client.start()
    except Exception as exc:  # noqa: BLE001 - any start failure: report it, try again
        return getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    try:
        await down.clear()  # an upstream runs again
        # (a spare whose upstream died while it waited for a slot serves nothing)
        if claim is None or (slot := await _claimed(server, claim, client)) >= 0:
            await _serve(endpoint, server, f"{server.name}:{slot}", client)
    finally:
        if claim is not None:
            claim.release()  # before the close: a spare takes over while this upstream shuts down
        await client.close()
    return client.gone_reason


async def _claimed(server: SourceRef | McpServer, claim: SlotClaim, client: Source) -> int:
    """The slot this process now holds, or -1 if its upstream died while it waited for one."""
    if (slot := claim.try_claim()) is not None:
        return slot
    log.info(
        "%s: every slot is served; this worker (pid %d) is the warm spare", server.name, os.getpid()
    )
    claiming = asyncio.create_task(claim.claim())
    lost = asyncio.create_task(client.closed.wait())
    await asyncio.wait({claiming, lost}, return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    if not claiming.done():
        claiming.cancel()
        log.error("%s: the spare's upstream exited", server.name)
        return -1
    slot = claiming.result()
    log.warning("%s: slot %d was free; this spare serves it now", server.name, slot)
    return slot


async def _serve(endpoint: str, server: SourceRef | McpServer, slot: str, client: Source) -> None:
    """Serve until the upstream dies."""
    service = UpstreamService(server, client)
    log.info(
        "%s: upstream ready with %d tools, serving slot %s",
        server.name,
        len(service.tool_names),
        slot,
    )
    worker = BusWorker(
        endpoint,
        upstream_service(server.name),
        service.handle,
        capacity=CAPACITY,
        slot=slot,
        meta=service.meta(),
    )
    # Resource subscriptions: every front-end hears the updates, through the broker (EVENT),
    # so a worker on another host publishes them too.
    client.on_resource_updated = lambda params: worker.publish(
        f"resource.{server.name}.updated", {"uri": params.get("uri")}
    )
    serving = asyncio.create_task(worker.run())
    upstream_lost = asyncio.create_task(client.closed.wait())
    changes = asyncio.create_task(service.follow_list_changes(worker))
    # A remote server that dies is not seen by a streamable HTTP session until it is asked
    # something: ask (MCP ping), so the next call gets "unavailable", not a failed call.
    pings = None
    if isinstance(client, UpstreamClient) and client.spec.transport in (
        "sse",
        "streamable_http",
        "http",
    ):
        pings = asyncio.create_task(_ping(server.name, client))
    tasks = [t for t in (serving, upstream_lost, changes, pings) if t is not None]
    try:
        await asyncio.wait({serving, upstream_lost}, return_when=asyncio.FIRST_COMPLETED)
        if upstream_lost.done():  # its calls fail at once (UPSTREAM_GONE): let them answer first
            await worker.drain(DRAIN)
    finally:
        worker.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ping(name: str, client: UpstreamClient) -> None:
    """Ping a remote upstream every PING_INTERVAL; one that does not answer in PING_TIMEOUT, or
    whose connection fails, is closed (its worker then reconnects, backing off)."""
    while not client.closed.is_set():
        await asyncio.sleep(PING_INTERVAL)
        try:
            await client.request("ping", None, PING_TIMEOUT)
        except UpstreamError:
            continue  # it answered, if only with an error: it is there
        except (UpstreamGone, UpstreamTimeout) as exc:
            log.error(
                "%s: %s did not answer a ping (%s): reconnecting",
                name,
                client.spec.url,
                exc.reason or exc or type(exc).__name__,
            )
            await client.close()
            return
