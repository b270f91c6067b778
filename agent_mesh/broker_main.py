"""The broker's own process image: ZeroMQ, msgpack and the routing, nothing else.

`agent-mesh run broker` reads its settings the way every role does (the CLI, the config file
validated by pydantic, its last-good fallback, the flags and variables), then replaces itself
(exec: same pid, same command line) with this image, handed the settings in $AGENT_MESH_BROKER.
The config layer, pydantic and asyncio cost a process ~20 MB that the broker, which only
routes frames, would keep for its whole life (docs/profiling.md, Memory). `agent_mesh/__main__`
picks this image when the variable is set, before anything else is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

ENV = "AGENT_MESH_BROKER"  # the settings, as JSON: {"name", "state", "remote", "keys"}


def log_to_stderr(name: str) -> None:
    """Every role's log lines: to stderr (supervisord's log of the process), named `role:slot`."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def exec_broker(name: str, state: Path, remote: str | None, keys: Path | None) -> NoReturn:
    """Become the lean broker: `state` the state directory (its ipc sockets), `remote` the tcp
    endpoint to serve too and `keys` its CURVE keys directory (both None: ipc only)."""
    settings = {"name": name, "state": str(state), "remote": remote, "keys": keys and str(keys)}
    env = {**os.environ, ENV: json.dumps(settings)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "agent_mesh", *sys.argv[1:]], env)


def main() -> None:
    settings = json.loads(os.environ.pop(ENV))
    log_to_stderr(settings["name"])
    from bus.broker import Broker
    from bus.endpoints import CurveServer, Endpoints, KeysError

    endpoints = Endpoints.in_dir(Path(settings["state"]))
    if settings["remote"] is None:
        Broker(endpoints).run()
        return
    try:  # checked before the exec; read again here (the secret key is not passed around)
        curve = CurveServer.from_dir(settings["keys"])
    except KeysError as exc:
        sys.exit(f"agent-mesh: {exc}")
    Broker(endpoints, remote=settings["remote"], curve=curve).run()
