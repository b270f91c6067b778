"""The stdio MCP connector (`agent-mesh --mcp`): one MCP session over stdin/stdout (Claude Code,
Cursor), a front-end process on the mesh's bus. Attaches to the mesh of its config, starting it
if none runs (agent_mesh/attach.py). Nothing but MCP frames is written to stdout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

from agent_mesh.attach import ensure_mesh
from agent_mesh.config import LoadedConfig
from gateway.frontend import FrontEnd
from gateway.mcp_server import MeshMcp, new_session_id

log = logging.getLogger(__name__)

UPSTREAM_WAIT = 30.0  # how long the first tools/list may wait for upstreams still starting


async def serve(loaded: LoadedConfig, agent: str, session_id: str | None) -> None:
    endpoints = ensure_mesh(loaded)
    session = session_id or new_session_id()
    frontend = FrontEnd(loaded, endpoints.requests, endpoints.events_out)
    await frontend.start()
    try:
        await _wait_for_upstreams(frontend)
        server = MeshMcp(frontend, identify=lambda ctx: (agent, session)).build()
        # serve_loop speaks the initialize handshake only (see MeshMcp.build) and, unlike
        # Server.run, does not enter the lifespan itself.
        async with stdio_server() as (read_stream, write_stream), server.lifespan(server) as state:
            await serve_loop(server, read_stream, write_stream, lifespan_state=state,
                             init_options=server.create_initialization_options())
    finally:
        await frontend.stop()


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
    down = [f"{name} ({view.reason})" if view.reason else name for name, view in servers.items() if not view.up]
    if down:
        log.warning("serving without upstreams that are down: %s", ", ".join(down))


def main(loaded: LoadedConfig, agent: str, session_id: str | None) -> Any:
    import uvloop

    from agent_mesh.attach import clients_dir

    logging.basicConfig(level=logging.WARNING, format="agent-mesh --mcp: %(levelname)s %(message)s")
    try:
        return uvloop.run(serve(loaded, agent, session_id))
    except KeyboardInterrupt:
        return 0
    finally:
        import contextlib
        import os

        with contextlib.suppress(OSError):  # (no state directory: nothing to remove)
            (clients_dir(loaded.state_dir()) / str(os.getpid())).unlink(missing_ok=True)
