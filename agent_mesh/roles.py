"""`agent-mesh run <role>`: the entry point of each process in the tree (what supervisord runs)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from agent_mesh.broker_main import exec_broker, log_to_stderr
from bus.endpoints import CurveClient, CurveServer, Endpoints, KeysError, parse_tcp, use_curve
from bus.state_dir import StateDir
from mesh_config.model import LoadedConfig

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


# The tcp bus settings: flags, else these variables, else (broker) the config's `bus:` section.
ENV_KEYS = "AGENT_MESH_KEYS"  # CURVE keys directory (broker) or client bundle (other roles)
ENV_LISTEN = "AGENT_MESH_LISTEN"  # broker: also serve workers of other hosts here (tcp, CURVE)


_K = TypeVar("_K")
Setting = tuple[str, str]  # (value, where it was set: for error messages)


def _first(*candidates: tuple[str | Path | None, str]) -> Setting | None:
    return next(((str(value), where) for value, where in candidates if value), None)


def _tcp_with_keys(
    address: Setting, keys: Setting | None, keys_options: str, load: Callable[[Path], _K]
) -> tuple[str, int, Path, _K]:
    """(host, port, keys directory, CURVE keys) for a tcp bus address; exits naming the setting
    that is unusable."""
    try:
        host, port = parse_tcp(address[0])
    except ValueError as exc:
        raise SystemExit(f"agent-mesh: {address[1]}: {exc}") from None
    made_by = "made by `agent-mesh keys`, see docs/multihost.md"
    if keys is None:
        raise SystemExit(
            f"agent-mesh: {address[1]}: {address[0]} needs CURVE keys: {keys_options} ({made_by})"
        )
    directory = Path(keys[0]).expanduser()
    if not directory.is_dir():
        raise SystemExit(f"agent-mesh: {keys[1]}: {directory}: no such directory ({made_by})")
    try:
        return host, port, directory, load(directory)
    except KeysError as exc:
        raise SystemExit(f"agent-mesh: {keys[1]}: {exc}") from None


def endpoints_for(
    loaded: LoadedConfig, connect: str | None, keys: str | Path | None = None
) -> Endpoints:
    """The bus endpoints of a process that is not the broker: the local ipc sockets, or with
    `connect` a broker on another host over tcp, authenticated with the CURVE bundle `keys`
    (default $AGENT_MESH_KEYS). The config's `bus:` section is the broker's, not read here."""
    if not connect:
        return Endpoints.in_dir(loaded.state_dir())
    host, port, _, curve = _tcp_with_keys(
        (connect, "--connect"),
        _first((keys, "--keys"), (os.environ.get(ENV_KEYS), f"${ENV_KEYS}")),
        f"--keys DIR or ${ENV_KEYS}",
        CurveClient.from_dir,
    )
    endpoints = Endpoints.tcp(host, port)
    use_curve(endpoints.requests, curve)  # every bus socket of this process to the broker uses it
    return endpoints


def broker_remote(
    loaded: LoadedConfig, listen: str | None = None, keys: str | Path | None = None
) -> tuple[str, CurveServer] | None:
    """The tcp endpoint the broker also serves for workers of other hosts, and its CURVE keys
    (None: ipc only). Each setting: the flag, else $AGENT_MESH_LISTEN / $AGENT_MESH_KEYS, else
    `bus.listen` / `bus.keys` in the config. Exits naming the setting that is unusable."""
    remote = _broker_tcp(loaded, listen, keys)
    return None if remote is None else (remote[0], remote[2])


def _broker_tcp(
    loaded: LoadedConfig, listen: str | None, keys: str | Path | None
) -> tuple[str, Path, CurveServer] | None:
    """`broker_remote`, with the keys' directory."""
    file = loaded.path
    address = _first(
        (listen, "--connect"),
        (os.environ.get(ENV_LISTEN), f"${ENV_LISTEN}"),
        (loaded.config.bus.listen, f"bus.listen in {file}"),
    )
    if address is None:
        return None
    keys_dir = _first(
        (keys, "--keys"),
        (os.environ.get(ENV_KEYS), f"${ENV_KEYS}"),
        (loaded.bus_keys_path, f"bus.keys in {file}"),
    )
    host, port, directory, curve = _tcp_with_keys(
        address, keys_dir, f"bus.keys in {file}, --keys DIR or ${ENV_KEYS}", CurveServer.from_dir
    )
    bind_host = "*" if host in ("0.0.0.0", "::") else host
    return f"tcp://{bind_host}:{port}", directory, curve


def run_role(
    role: str,
    loaded: LoadedConfig,
    *,
    server: str | None = None,
    slot: int = 0,
    port: int | None = None,
    connect: str | None = None,
    keys: str | Path | None = None,
) -> None:
    """`connect`: tcp://host:port of a broker on another host (the broker itself: the address
    to serve it on, overriding $AGENT_MESH_LISTEN and `bus.listen`). `keys`: CURVE keys
    (default $AGENT_MESH_KEYS; the broker's also `bus.keys`)."""
    name = f"{role}:{server}:{slot}" if server else f"{role}:{slot}"
    if role == "broker":  # settings checked here, served by a process image of its own
        remote = _broker_tcp(loaded, connect, keys)
        exec_broker(name, loaded.state_dir(), *(remote[:2] if remote else (None, None)))
    log_to_stderr(name)
    for chatty in ("httpx", "httpx2"):  # a line per HTTP request (remote upstreams' pings): no
        logging.getLogger(chatty).setLevel(logging.WARNING)
    config = loaded.config
    endpoints = endpoints_for(loaded, connect, keys)
    if role == "tracer":
        from workers import tracer

        _run(
            tracer.run(
                endpoints.requests,
                endpoints.events_in,
                StateDir(loaded.state_dir()).traces_db,
                loaded.trace_path,
                metrics=config.metrics,
                otel_endpoint=config.otel_endpoint,
                rotate_bytes=config.audit.rotate_bytes,
                checkpoints=(loaded.audit_key_path, config.audit.checkpoint_seconds)
                if loaded.audit_key_path is not None and config.audit.checkpoint_seconds
                else None,
            )
        )
    elif role == "approval":
        from workers import approval

        db = StateDir(loaded.state_dir()).approvals_db
        _run(approval.run(endpoints.requests, db, config, endpoints.events_in))
    elif role == "policy":
        from workers import policy

        policies = list(config.policies)
        _run(policy.run(endpoints.requests, policies, f"policy:{slot}", endpoints.events_out))
    elif role == "upstream":
        from workers import upstream_run

        spec = config.source(server or "")
        if spec is None:
            names = ", ".join(s.name for s in config.sources()) or "none"
            sys.exit(
                f"agent-mesh run upstream: no tool source named {server!r} in {loaded.path} "
                f"(mcp_servers, cli_tools or openapi; configured: {names})"
            )
        sys.exit(
            _run(
                upstream_run.run(
                    endpoints.requests,
                    spec,
                    slot=slot,
                    default_cwd=str(loaded.path.parent),
                    # Slots and the warm spare are this host's (serve's tree); a
                    # worker of another host keeps the --slot it was given.
                    slots_dir=None if connect else StateDir(loaded.state_dir()).slots,
                )
            )
        )
    elif role == "gateway":
        _gateway(loaded, endpoints, port or config.port, slot)
    elif role == "lifecycle":
        from agent_mesh.attach import watch_leases

        watch_leases(loaded.state_dir(), config.grace_seconds)
        # Stay up while supervisord stops the tree: exiting now would only get us restarted.
        signal.pause()
    else:
        sys.exit(f"agent-mesh run: unknown role {role!r} (one of {', '.join(ROLES)})")


def _gateway(loaded: LoadedConfig, endpoints: Endpoints, port: int, slot: int) -> None:
    """Listen first: a port that cannot be had is one line in the log and an exit, which
    supervisord retries a few times (startretries) and then gives up on (FATAL; `serve` says it).
    With `gateway.processes` > 1 every gateway process listens on the port (SO_REUSEPORT) and
    on its own unix socket, where the others reach it (gateway/mcp_route.py)."""
    from agent_mesh import ports

    host = loaded.config.host
    processes = loaded.config.gateway.count
    ports.raise_fd_limit()
    try:
        sock = ports.bind(host, port, shared=processes > 1)
    except OSError as exc:
        sys.exit(
            f"gateway: {ports.explain(exc, host, port, f'set port: in {loaded.path} or --port')}"
        )
    sockets = [sock]
    if processes > 1:
        sockets.append(_unix_listener(StateDir(loaded.state_dir()).gateway_sock(slot)))
    import uvicorn

    from gateway.http import create_app
    from gateway.rest_protocol import rest_protocol

    app = create_app(
        loaded, endpoints.requests, endpoints.events_out, endpoints.events_in, slot=slot
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="uvloop",
            http=rest_protocol(app),  # uvicorn's httptools protocol, POST /tool/ without ASGI
            ws="none",  # no websockets served: wsproto not imported
        )
    )
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)  # uvicorn's startup failure (logged above)


def _unix_listener(path: Path) -> socket.socket:
    """A listening unix socket at `path` (a file left by a dead process of this slot replaced)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(2048)
    return sock
