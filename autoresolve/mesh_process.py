"""`mesh_process`: keep a mesh running for the supervisor (deployment config 3), or attach to the
one that already runs for that config (config 6: started by Claude's `agent-mesh --mcp`).

- **Attach or start**: a mesh for the config is running when its state directory names a live
  supervisord (agent_mesh/attach.py's rule, under the same `start.lock`, so a connector and the
  supervisor starting at once make one mesh), or when `GET /health` answers at the mesh URL (any
  compatible mesh, the Go one too). Attached, the supervisor holds a client lease like a
  connector, so an embedded mesh lives while it is attached; it never stops a mesh it attached to.
- **Owned**: `<command> --config <config> [args]` in its own session. Watched every
  `health_interval`: when it exits, or `/health` stays unanswered `unhealthy_after` times, what is
  left of its tree is killed and it is started again, with backoff doubling per failed start.
  The supervisor is a child subreaper (Linux), so a kill -9 of the mesh's supervisord leaves its
  workers to us, not to init: they are stopped before the new mesh binds the same port and bus.
- **Exit**: an owned mesh is stopped (SIGTERM, then what is left is killed), unless connectors
  are attached to it: then a detached watcher (agent_mesh.attach.watch_leases) stops it
  `grace_seconds` after the last of them has left, as for a mesh started by `--mcp`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from agent_mesh.attach import live_clients, release_lease, take_lease
from agent_mesh.proctree import stop_descendants
from autoresolve.config import Loaded
from autoresolve.mesh_api import MeshApi
from bus.state_dir import StateDir, running_pid
from mesh_config.file import load_config
from mesh_config.model import ConfigError
from policy.durations import parse_duration

log = logging.getLogger("autoresolve.mesh")

STOP_GRACE = 20.0  # seconds for supervisord to stop its tree


class MeshProcessError(Exception):
    """mesh_process cannot work at all (bad command or config): one line for the user."""


class MeshProcess:
    def __init__(self, loaded: Loaded, api: MeshApi) -> None:
        self.cfg = loaded.settings.mesh_process
        config = loaded.mesh_config_path
        assert config is not None  # validated: required when enabled
        self.config_path = config
        self.api = api
        self.state = _state_dir(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.attached_pid: int | None = None
        self.lease: Path | None = None
        self.failures = 0  # consecutive unanswered health checks
        self.starts = 0  # consecutive starts that never got healthy
        self.up = asyncio.Event()  # set each time a mesh we started is up (the poll loop's wake)

    # -- the watch ------------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """After `ensure`: check on the mesh every health_interval until `stop`."""
        interval = parse_duration(self.cfg.health_interval)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                await self.check(stop)

    async def ensure(self, stop: asyncio.Event) -> None:
        """Attach to the running mesh, else start one (retrying with backoff until it is up)."""
        while not stop.is_set():
            if await self._attach():
                return
            if await self._start(stop):
                return
            delay = self._backoff()
            log.warning("the mesh did not come up; starting it again in %.1fs", delay)
            await _sleep(stop, delay)

    async def check(self, stop: asyncio.Event) -> None:
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                log.warning(
                    "the mesh (pid %d) exited with status %s; restarting it", self.proc.pid, code
                )
                await self._restart(stop)
                return
        healthy = await self.api.health() is not None
        if healthy:
            self.failures = 0
            return
        self.failures += 1
        if self.proc is None:  # attached: is it gone, or only busy?
            # Its supervisord is gone; or, attached by /health only (another implementation),
            # it has not answered unhealthy_after times.
            by_health = self.attached_pid is None
            if running_pid(self.state) is None and (
                not by_health or self.failures >= self.cfg.unhealthy_after
            ):
                log.warning("the mesh we attached to is gone; starting one")
                self.attached_pid = None
                await self.ensure(stop)
            return
        if self.failures >= self.cfg.unhealthy_after:
            log.warning(
                "the mesh (pid %d) has not answered GET /health %d times; restarting it",
                self.proc.pid,
                self.failures,
            )
            await self._restart(stop)

    async def _restart(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._kill_tree)
        self.proc, self.failures = None, 0
        await _sleep(stop, self._backoff())
        await self.ensure(stop)

    def _backoff(self) -> float:
        first, most = (
            parse_duration(self.cfg.restart_backoff),
            parse_duration(self.cfg.restart_backoff_max),
        )
        return min(first * 2.0 ** max(self.starts - 1, 0), most)

    # -- attach / start -------------------------------------------------------------------------

    async def _attach(self) -> bool:
        pid = running_pid(self.state)
        if pid is None and await self.api.health() is None:
            return False
        if self.lease is None:
            self.lease = take_lease(self.state)
        if pid != self.attached_pid or pid is None:
            where = f"supervisord pid {pid}, state {self.state}" if pid else f"at {self.api.url}"
            log.info(
                "attached to the mesh already running for %s (%s); not starting another",
                self.config_path,
                where,
            )
        self.attached_pid, self.starts = pid, 0
        return True

    async def _start(self, stop: asyncio.Event) -> bool:
        """Start our own mesh; True once it answers /health."""
        self.starts += 1
        argv = [*self.cfg.argv, "--config", str(self.config_path), *self.cfg.args]
        lock = await asyncio.to_thread(self._lock)
        try:
            if running_pid(self.state) is not None:
                return await self._attach()  # someone (a connector) started it meanwhile
            log.info("starting the mesh: %s", " ".join(argv))
            try:
                # Popen returns at once; the process is watched by polling, never waited on here.
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: ASYNC220
            except OSError as exc:
                raise MeshProcessError(
                    f"mesh_process.command: cannot run {argv[0]!r}: {exc.strerror or exc}"
                ) from None
            deadline = time.monotonic() + parse_duration(self.cfg.start_timeout)
            # Hold the lock until the state dir names our supervisord: a connector then attaches.
            while running_pid(self.state) is None and self.proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        finally:
            lock.close()
        while time.monotonic() < deadline and not stop.is_set():
            if self.proc.poll() is not None:
                log.warning(
                    "the mesh exited with status %s while starting (its output is above)",
                    self.proc.returncode,
                )
                await asyncio.to_thread(self._kill_tree)
                self.proc = None
                return False
            if await self.api.ready():
                log.info("the mesh (pid %d) is up at %s", self.proc.pid, self.api.url)
                return self._started()
            await asyncio.sleep(0.1)
        if stop.is_set():
            return True
        health = await self.api.health()
        if health is not None:  # answering but not ready (an upstream that does not start?)
            log.warning(
                "the mesh (pid %d) answers at %s but is not ready after %s: %s",
                self.proc.pid,
                self.api.url,
                self.cfg.start_timeout,
                json.dumps(health)[:300],
            )
            return self._started()
        log.warning("the mesh did not answer GET /health within %s", self.cfg.start_timeout)
        await asyncio.to_thread(self._kill_tree)
        self.proc = None
        return False

    def _started(self) -> bool:
        self.starts, self.failures = 0, 0
        self.up.set()
        if self.lease is None:
            self.lease = take_lease(self.state)
        return True

    def _lock(self) -> IO[str]:
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(StateDir(self.state).start_lock, "w")  # noqa: SIM115 - held across awaits
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    # -- stopping -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.lease is not None:
            release_lease(self.lease)
            self.lease = None
        if self.proc is None or self.proc.poll() is not None:
            return
        others = [pid for pid in live_clients(self.state) if pid != os.getpid()]
        if not others:
            log.info("stopping the mesh (pid %d)", self.proc.pid)
            await asyncio.to_thread(self._stop)
            return
        # Connectors attached to the mesh we started: it lives on like a mesh started by
        # `--mcp`, until grace_seconds after the last of them has left.
        grace = load_config(self.config_path).config.grace_seconds
        log.info(
            "leaving the mesh (pid %d) to %d attached client(s): it stops %gs after the last "
            "one leaves",
            self.proc.pid,
            len(others),
            grace,
        )
        code = (
            "from pathlib import Path; from agent_mesh.attach import watch_leases; "
            f"watch_leases(Path({str(self.state)!r}), {grace!r})"
        )
        subprocess.Popen(  # noqa: ASYNC220 - detached: never waited on
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        self._kill_tree()

    def _kill_tree(self) -> None:
        """Kill the owned mesh and every process left of it (orphans are ours: subreaper)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Orphans of a killed supervisord: SIGTERM lets an upstream worker close its MCP server;
        # the gateway may hold connections of callers waiting on approvals, so not for long.
        stop_descendants(grace=2.0)


def _state_dir(config: Path) -> Path:
    """The state directory of the mesh's config (its supervisord pid, its start lock, leases)."""
    try:
        return load_config(config).state_dir()
    except ConfigError as exc:
        raise MeshProcessError(
            f"mesh_process.config: {str(exc).splitlines()[-1].strip()}"
        ) from None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
