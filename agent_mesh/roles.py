"""`agent-mesh run <role>`: the entry point of each process in the tree (what supervisord runs)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import uvloop

from agent_mesh.config import LoadedConfig
from bus.endpoints import Endpoints

ROLES = ("broker", "gateway", "policy", "tracer", "approval", "upstream", "lifecycle")


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a role's main coroutine; SIGTERM/SIGINT cancel it so its `finally` blocks clean up
    (an upstream worker closes its MCP server properly instead of leaving it to stdin EOF)."""

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await main
        except asyncio.CancelledError:
            return 0

    # uvloop: a cheaper event loop per wakeup, which is most of what these processes do.
    return uvloop.run(guarded())


def endpoints_for(loaded: LoadedConfig, connect: str | None) -> Endpoints:
    if connect:
        host, _, port = connect.removeprefix("tcp://").rpartition(":")
        return Endpoints.tcp(host, int(port))
    return Endpoints.in_dir(loaded.state_dir())


def run_role(
    role: str,
    loaded: LoadedConfig,
    *,
    server: str | None = None,
    slot: int = 0,
    port: int | None = None,
    connect: str | None = None,
) -> None:
    name = f"{role}:{server}:{slot}" if server else f"{role}:{slot}"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    endpoints = endpoints_for(loaded, connect)
    config = loaded.config
    if role == "broker":
        from bus.broker import Broker

        Broker(endpoints).run()
    elif role == "tracer":
        from workers import tracer

        _run(tracer.run(endpoints.requests, endpoints.events_in, loaded.state_dir() / "traces.db", loaded.trace_path))
    elif role == "approval":
        from workers import approval

        _run(approval.run(endpoints.requests, loaded.state_dir() / "state.db", config))
    elif role == "policy":
        from workers import policy

        _run(policy.run(endpoints.requests, list(config.policies), slot=f"policy:{slot}"))
    elif role == "upstream":
        from workers import upstream

        spec = config.server(server or "")
        if spec is None:
            sys.exit(f"agent-mesh run upstream: no mcp_servers entry named {server!r} in {loaded.path}")
        sys.exit(_run(upstream.run(endpoints.requests, spec, slot=f"{spec.name}:{slot}",
                                              default_cwd=str(loaded.path.parent))))
    elif role == "gateway":
        import uvicorn

        from gateway.http import create_app

        app = create_app(loaded, endpoints.requests)
        uvicorn.run(app, host=config.host, port=port or config.port, log_level="warning",
                    access_log=False, lifespan="on", loop="uvloop", http="httptools")
    elif role == "lifecycle":
        from agent_mesh.attach import watch_leases

        watch_leases(loaded.state_dir(), config.grace_seconds)
        # Stay up while supervisord stops the tree: exiting now would only get us restarted.
        signal.pause()
    else:
        sys.exit(f"agent-mesh run: unknown role {role!r} (one of {', '.join(ROLES)})")
