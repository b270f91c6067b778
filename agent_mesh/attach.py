"""Attach-or-start: front-ends started per client (`agent-mesh --mcp`) share one mesh per config.

The first connector starts the mesh detached (its own session, output to the state dir's logs)
in *embedded* mode; later ones find it running and attach to its bus. Each attached client holds
a lease file `clients/<pid>` in the state dir; the embedded mesh's `lifecycle` process stops the
mesh `grace_seconds` after the last lease is gone (a mesh started by `serve` never stops by itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from agent_mesh.errors import UserError
from agent_mesh.state import make_state_dir
from bus.endpoints import Endpoints
from bus.state_dir import StateDir, running_pid
from mesh_config.model import LoadedConfig

START_TIMEOUT = 60.0


class AttachError(UserError):
    """The mesh could not be started (or reached) for this connector."""


def clients_dir(state: Path) -> Path:
    return StateDir(state).clients


def live_clients(state: Path) -> list[int]:
    """Pids holding a lease; stale leases (dead pids) are removed on the way."""
    pids = []
    directory = clients_dir(state)
    if not directory.is_dir():
        return []
    for lease in directory.iterdir():
        try:
            pid = int(lease.name)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            lease.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass  # alive, someone else's
        pids.append(pid)
    return pids


def take_lease(state: Path) -> Path:
    directory = clients_dir(state)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    lease = directory / str(os.getpid())
    lease.touch()
    return lease


def release_lease(lease: Path) -> None:
    with contextlib.suppress(OSError):  # (no state directory: nothing to remove)
        lease.unlink(missing_ok=True)


def ensure_mesh(loaded: LoadedConfig) -> tuple[Endpoints, Path]:
    """Return the bus endpoints of this config's mesh, starting it (embedded) if none runs, and
    this process's lease (the caller releases it when its client has gone: `release_lease`).

    Takes the lease first, so a mesh that is about to stop for lack of clients sees us.
    Concurrent starters are serialised by a lock file: only one mesh per config.
    """
    state = make_state_dir(loaded)
    endpoints = Endpoints.in_dir(state)
    lease = take_lease(state)
    try:
        with open(StateDir(state).start_lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if running_pid(state) is None:
                _start_detached(loaded, state)
    except BaseException:
        release_lease(lease)
        raise
    return endpoints, lease


def _start_detached(loaded: LoadedConfig, state: Path) -> None:
    logs = StateDir(state).logs
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = StateDir(state).embedded_start_log
    with open(log, "ab") as out:
        # New session: Claude's Ctrl-C or closing our stdio must not signal the mesh directly.
        serving = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_mesh",
                "serve",
                "--config",
                str(loaded.path),
                "--embedded",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "AGENT_MESH_HOME": str(state.parent)},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if running_pid(state) is not None and StateDir(state).requests_ipc.exists():
            return
        if serving.poll() is not None:  # it gave up: say why (its last line, e.g. a taken port)
            from agent_mesh.tree import last_line

            why = last_line(log).removeprefix("agent-mesh: ") or f"exit status {serving.returncode}"
            raise AttachError(f"the mesh for {loaded.path} did not start: {why} (log: {log})")
        time.sleep(0.05)
    raise AttachError(
        f"the mesh for {loaded.path} did not start in {START_TIMEOUT:.0f}s; see {logs}"
    )


def watch_leases(state: Path, grace: float, interval: float = 0.5) -> None:
    """The embedded mesh's `lifecycle` process: stop supervisord once no client is left."""
    idle_since: float | None = None
    while True:
        if live_clients(state):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= grace:
            pid = running_pid(state)
            if pid is not None:
                os.kill(pid, 15)  # supervisord stops the whole tree
            return
        time.sleep(interval)
