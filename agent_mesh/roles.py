"""`agent-mesh run <role>`: the entry point of each process in the tree (what supervisord runs)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop

from agent_mesh.config import LoadedConfig
from bus.endpoints import CurveClient, CurveServer, Endpoints, KeysError, parse_tcp, use_curve

if TYPE_CHECKING:
    from bus.broker import Broker

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


# Settings without a config section yet (docs/multihost.md): flags, else these variables.
ENV_KEYS = "AGENT_MESH_KEYS"  # CURVE keys directory (broker) or client bundle (other roles)
ENV_LISTEN = "AGENT_MESH_LISTEN"  # broker: also serve workers of other hosts here (tcp, CURVE)


_K = TypeVar("_K")


def _tcp_with_keys(address: str, keys: str | Path | None, who: str, load: Callable[[Path], _K]) -> tuple[str, int, _K]:
    """(host, port, CURVE keys) for a tcp bus address; exits with a clear message when either is bad."""
    try:
        host, port = parse_tcp(address)
    except ValueError as exc:
        raise SystemExit(f"{who}: {exc}") from None
    if not keys:
        raise SystemExit(f"{who}: {address} needs CURVE keys: --keys DIR or ${ENV_KEYS} "
                         "(made by `agent-mesh keys`, see docs/multihost.md)")
    try:
        return host, port, load(Path(keys).expanduser())
    except KeysError as exc:
        raise SystemExit(f"{who}: {exc}") from None


def endpoints_for(loaded: LoadedConfig, connect: str | None, keys: str | Path | None = None) -> Endpoints:
    """The bus endpoints of a process that is not the broker: the local ipc sockets, or with
    `connect` a broker on another host over tcp, authenticated with the CURVE bundle `keys`."""
    if not connect:
        return Endpoints.in_dir(loaded.state_dir())
    host, port, curve = _tcp_with_keys(connect, keys, "agent-mesh run --connect", CurveClient.from_dir)
    endpoints = Endpoints.tcp(host, port)
    use_curve(endpoints.requests, curve)  # every bus socket of this process to the broker uses it
    return endpoints


def broker_for(loaded: LoadedConfig, listen: str | None, keys: str | Path | None) -> Broker:
    """The broker: always on the local ipc sockets; with `listen` also on tcp for workers of
    other hosts, CURVE only, accepting the keys authorised in the keys directory `keys`."""
    from bus.broker import Broker

    endpoints = Endpoints.in_dir(loaded.state_dir())
    if not listen:
        return Broker(endpoints)
    host, port, curve = _tcp_with_keys(listen, keys, "agent-mesh run broker", CurveServer.from_dir)
    bind_host = "*" if host in ("0.0.0.0", "::") else host
    return Broker(endpoints, remote=f"tcp://{bind_host}:{port}", curve=curve)


def run_role(
    role: str,
    loaded: LoadedConfig,
    *,
    server: str | None = None,
    slot: int = 0,
    port: int | None = None,
    connect: str | None = None,
    keys: str | Path | None = None,
    listen: str | None = None,
) -> None:
    """`connect`: tcp://host:port of a broker on another host (the broker itself: the address
    to serve it on, like `listen`). `keys`: CURVE keys (default $AGENT_MESH_KEYS). `listen`:
    broker only, default $AGENT_MESH_LISTEN."""
    name = f"{role}:{server}:{slot}" if server else f"{role}:{slot}"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    keys = keys or os.environ.get(ENV_KEYS) or None
    config = loaded.config
    if role == "broker":
        broker_for(loaded, listen or connect or os.environ.get(ENV_LISTEN) or None, keys).run()
        return
    endpoints = endpoints_for(loaded, connect, keys)
    if role == "tracer":
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
        sys.exit(_run(upstream.run(endpoints.requests, spec, slot=f"{spec.name}:{slot}", events_endpoint=endpoints.events_in,
                                              default_cwd=str(loaded.path.parent))))
    elif role == "gateway":
        import uvicorn

        from gateway.http import create_app

        app = create_app(loaded, endpoints.requests, endpoints.events_out)
        uvicorn.run(app, host=config.host, port=port or config.port, log_level="warning",
                    access_log=False, lifespan="on", loop="uvloop", http="httptools")
    elif role == "lifecycle":
        from agent_mesh.attach import watch_leases

        watch_leases(loaded.state_dir(), config.grace_seconds)
        # Stay up while supervisord stops the tree: exiting now would only get us restarted.
        signal.pause()
    else:
        sys.exit(f"agent-mesh run: unknown role {role!r} (one of {', '.join(ROLES)})")
