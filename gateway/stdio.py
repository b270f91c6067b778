"""The stdio MCP connector (`agent-mesh --mcp`): one MCP session over stdin/stdout (Claude Code,
Cursor), a front-end process on the mesh's bus. The CLI attaches to the mesh of its config,
starting it if none runs, and hands this module the bus endpoints (agent_mesh/attach.py).
Nothing but MCP frames is written to stdout.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

from bus.endpoints import Endpoints
from bus.state_dir import StateDir, running_pid
from gateway.frontend import FrontEnd
from gateway.mcp_server import MeshMcp, new_session_id
from gateway.stdio_lines import ScreenedLines
from mesh_config.model import LoadedConfig

log = logging.getLogger(__name__)

UPSTREAM_WAIT = 30.0  # how long the first tools/list may wait for upstreams still starting
MESH_WATCH = 0.5  # s between looks at whether the mesh still runs
MESH_GONE = (
    10.0  # s a mesh may be gone (restarted, e.g. by `agent-mesh supervisor`) before we give up
)


async def serve(
    loaded: LoadedConfig,
    endpoints: Endpoints,
    agent: str,
    session_id: str | None,
    leave: Callable[[], None],
) -> None:
    session = session_id or new_session_id()
    frontend = FrontEnd(loaded, endpoints.requests, endpoints.events_out, endpoints.events_in)
    await frontend.start()
    try:
        await _wait_for_upstreams(frontend)
        server = MeshMcp(frontend, identify=lambda ctx: (agent, session)).build()
        watching = asyncio.create_task(_watch_mesh(loaded, leave))
        try:
            await _session(server)
        finally:
            watching.cancel()
    finally:
        await frontend.stop()


async def _session(server: Any) -> None:
    # serve_loop speaks the initialize handshake only (see MeshMcp.build) and, unlike
    # Server.run, does not enter the lifespan itself.
    stdin = ScreenedLines(
        anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
    )
    async with (
        stdio_server(stdin=stdin) as (read_stream, write_stream),  # type: ignore[arg-type]
        server.lifespan(server) as state,
    ):
        await serve_loop(
            server,
            read_stream,
            write_stream,
            lifespan_state=state,
            init_options=server.create_initialization_options(),
        )


async def _watch_mesh(loaded: LoadedConfig, leave: Callable[[], None]) -> None:
    """Once the mesh this session runs on has stopped (its supervisord gone for MESH_GONE), end the
    session loudly, with the mesh's reason when it gave one, instead of failing every call with
    "broker unavailable". A hard exit: the MCP transport reads stdin in a thread no cancellation
    reaches (it would wait for the client's next line). Traces not yet stored stay in the outbox
    journal; `leave` gives up this client's lease first (the hard exit skips every `finally`)."""
    state = loaded.state_dir()
    gone_since: float | None = None
    while gone_since is None or time.monotonic() - gone_since < MESH_GONE:
        await asyncio.sleep(MESH_WATCH)
        if running_pid(state) is not None:
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
    why = _stop_reason(StateDir(state).embedded_start_log)
    print(
        f"agent-mesh: the mesh for {loaded.path} stopped{f' ({why})' if why else ''}; "
        "restart this MCP server to start it again",
        file=sys.stderr,
        flush=True,
    )
    leave()
    os._exit(1)


def _stop_reason(log: Path) -> str:
    """What the mesh's last `serve` said when it gave up on a role (agent_mesh/tree.py), if it
    did."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-50:]
    except OSError:
        return ""
    since = max(
        (i for i, line in enumerate(lines) if line.startswith("agent-mesh: serving ")), default=0
    )
    given_up = [line for line in lines[since:] if "could not be kept running" in line]
    return given_up[-1].removeprefix("agent-mesh: ") if given_up else ""


async def _wait_for_upstreams(frontend: FrontEnd) -> None:
    """A freshly started mesh needs a moment before its upstreams have announced their tools. A
    server whose workers already said why it is down (it failed to start) is not waited for."""
    servers = frontend.catalog.servers
    deadline = time.monotonic() + UPSTREAM_WAIT
    while time.monotonic() < deadline:
        if all(view.up or view.reason for view in servers.values()):
            break
        await asyncio.sleep(0.1)
        await frontend.catalog.refresh()
    down = [
        f"{name} ({view.reason})" if view.reason else name
        for name, view in servers.items()
        if not view.up
    ]
    if down:
        log.warning("serving without upstreams that are down: %s", ", ".join(down))


def main(
    loaded: LoadedConfig,
    endpoints: Endpoints,
    agent: str,
    session_id: str | None,
    leave: Callable[[], None],
) -> Any:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="agent-mesh --mcp: %(levelname)s %(message)s")
    try:
        return uvloop.run(serve(loaded, endpoints, agent, session_id, leave))
    except KeyboardInterrupt:
        return 0
