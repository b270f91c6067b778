"""Live policy reload (the gateway process runs it): on SIGHUP, `POST /reload` (`mesh reload`)
or a change to the config file or a file of its `policy_dir` (watchfiles), read the config
again; validate the whole of it; if it is valid, its policies become the next generation of the
policy set, served on the bus as `policyset` (policy workers fetch it, workers/policy.py) and
announced with a `policy.set.changed` event. If it is not, the old set stays and the error is
kept for /health, `mesh health` and the log.

Only policies are applied live. Any other change (mcp_servers, cli_tools, openapi, port, ...)
is reported as needing a restart — in the log, /health and the reload answer — never ignored.
The generation is kept in `<state>/policy-set.json`, so it keeps growing across gateway restarts;
the config in force is kept for restarts on an invalid file (mesh_config/last_good.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bus.events import Publisher
from bus.messages import POLICY_SET_CHANGED, POLICYSET
from bus.state_dir import StateDir
from bus.worker import BusWorker, Request
from mesh_config.file import load_config
from mesh_config.last_good import FALLBACK, now, save_snapshot
from mesh_config.model import ConfigError, LoadedConfig
from policy.policyset import PolicySet

log = logging.getLogger(__name__)

DEBOUNCE_MS = 300  # a burst of writes (an editor's save) is one reload
# Sections applied live; a change anywhere else needs a restart (and is said so).
LIVE = frozenset({"policies", "policy_dir"})


def needs_restart(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """One line per config section that changed but is not applied live."""
    before = old.config.model_dump(exclude=set(LIVE))
    after = new.config.model_dump(exclude=set(LIVE))
    out = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) == after.get(key):
            continue
        was, now = before.get(key), after.get(key)
        if (
            isinstance(was, list)
            and isinstance(now, list)
            and all(isinstance(i, dict) and "name" in i for i in (*was, *now))
        ):
            old_by = {i["name"]: i for i in was}
            new_by = {i["name"]: i for i in now}
            parts = [
                f"{label}: {', '.join(names)}"
                for label, names in (
                    ("added", sorted(new_by.keys() - old_by.keys())),
                    ("removed", sorted(old_by.keys() - new_by.keys())),
                    (
                        "changed",
                        sorted(n for n in old_by.keys() & new_by.keys() if old_by[n] != new_by[n]),
                    ),
                )
                if names
            ]
            out.append(f"{key} changed ({'; '.join(parts)}): restart the mesh to apply it")
        else:
            out.append(f"{key} changed: restart the mesh to apply it")
    return out


class Reloader:
    def __init__(self, loaded: LoadedConfig, bus_endpoint: str, events_in: str | None) -> None:
        self.running = loaded  # the config the mesh was started with (all but its policies)
        self.bus_endpoint = bus_endpoint
        self.events_in = events_in
        self.state_file = StateDir(loaded.state_dir()).policy_set
        self.current = PolicySet.of(loaded.config.policies, self._generation_for(loaded))
        self.loaded_at = now()
        fallback = next((w for w in loaded.warnings if w.startswith(FALLBACK)), None)
        self.error: str | None = fallback  # started on the last valid config: say why
        self.error_at: str | None = now() if fallback else None
        self.restart_needed: list[str] = []
        self._lock = asyncio.Lock()
        self._publisher: Publisher | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._worker: BusWorker | None = None

    def _generation_for(self, loaded: LoadedConfig) -> int:
        """The stored generation if the policies are the stored version, else the next one."""
        try:
            stored = json.loads(self.state_file.read_text())
            generation, version = int(stored["generation"]), str(stored["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return 1
        return (
            generation
            if version == PolicySet.of(loaded.config.policies, 0).version
            else generation + 1
        )

    def _persist(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(
                json.dumps(
                    {
                        "generation": self.current.generation,
                        "version": self.current.version,
                        "loaded_at": self.loaded_at,
                        # for the other gateway processes' /health (gateway/peers.py)
                        "error": self.error,
                        "error_at": self.error_at,
                        "restart_needed": self.restart_needed,
                    }
                )
            )
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot store the policy set generation in %s: %s", self.state_file, exc)

    async def start(self) -> None:
        self._persist()
        if self.error is None:
            save_snapshot(self.running)
        if self.events_in is not None:
            self._publisher = Publisher(self.events_in)
        self._worker = BusWorker(self.bus_endpoint, POLICYSET, self._serve, capacity=64)
        self._tasks = [asyncio.create_task(self._worker.run()), asyncio.create_task(self._watch())]
        log.info(
            "policy set %s (generation %d, %d policies)",
            self.current.version,
            self.current.generation,
            len(self.current.policies),
        )

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._publisher is not None:
            self._publisher.close()

    async def _serve(self, request: Request) -> Any:
        return self.current.dump()

    def view(self) -> dict[str, Any]:
        """For /health: the set in force, and why the last reload was refused (if it was)."""
        out: dict[str, Any] = {
            "version": self.current.version,
            "generation": self.current.generation,
            "policies": len(self.current.policies),
            "loaded_at": self.loaded_at,
        }
        if self.error is not None:
            out["error"] = self.error
            out["error_at"] = self.error_at
        if self.restart_needed:
            out["restart_needed"] = self.restart_needed
        return out

    async def reload(self, trigger: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Read the config again and apply its policies if it is valid. The answer: `status`
        reloaded | unchanged | invalid, with the view. (`headers`: the caller's, which a gateway
        process that forwards the reload to this one passes on: gateway/peers.py.)"""
        async with self._lock:
            try:
                new = await asyncio.to_thread(load_config, self.running.path)
            except ConfigError as exc:
                self.error, self.error_at = str(exc), now()
                log.error(
                    "reload (%s) refused, policy set %s stays: %s",
                    trigger,
                    self.current.version,
                    exc,
                )
                self._persist()
                return {"status": "invalid", **self.view()}
            self.error = self.error_at = None
            self.restart_needed = needs_restart(self.running, new)
            for line in self.restart_needed:
                log.warning("reload (%s): %s", trigger, line)
            candidate = PolicySet.of(new.config.policies, self.current.generation + 1)
            if candidate.version == self.current.version:
                log.info("reload (%s): policy set %s unchanged", trigger, self.current.version)
                self._persist()
                return {"status": "unchanged", **self.view()}
            self.current, self.loaded_at = candidate, now()
            self._persist()
            save_snapshot(
                LoadedConfig(
                    config=self.running.config.model_copy(
                        update={"policies": list(candidate.policies)}
                    ),
                    path=self.running.path,
                )
            )
            if self._publisher is not None:
                self._publisher.publish(
                    POLICY_SET_CHANGED,
                    {"generation": candidate.generation, "version": candidate.version},
                )
            log.info(
                "reload (%s): policy set %s (generation %d, %d policies) in force",
                trigger,
                candidate.version,
                candidate.generation,
                len(candidate.policies),
            )
            return {"status": "reloaded", **self.view()}

    def watched(self) -> tuple[list[Path], set[Path], Path | None]:
        """(directories to watch, files that matter, policy_dir)."""
        config = self.running.path
        pdir = self.running.policy_dir_path
        dirs = [config.parent] + (
            [pdir] if pdir is not None and pdir.is_dir() and pdir != config.parent else []
        )
        return dirs, {config}, pdir

    async def _watch(self) -> None:
        """Reload when the config file or a *.yaml / *.yml of policy_dir changes."""
        from watchfiles import awatch

        dirs, files, pdir = self.watched()

        def relevant(_change: Any, path: str) -> bool:
            p = Path(path)
            if p in files:
                return True
            return (
                pdir is not None
                and p.parent == pdir
                and p.suffix in (".yaml", ".yml")
                and not p.name.startswith(".")
            )

        started = time.monotonic()
        while True:
            try:
                async for _ in awatch(
                    *dirs, watch_filter=relevant, debounce=DEBOUNCE_MS, step=50, recursive=False
                ):
                    await self.reload("file change")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a watcher problem must not stop the gateway
                log.warning("watching %s for policy changes failed: %s; retrying", dirs, exc)
            with contextlib.suppress(Exception):
                await asyncio.sleep(min(5.0, 1.0 + time.monotonic() - started))
