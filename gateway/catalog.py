"""The gateway's view of the upstream tools: built from the broker's `mmi.services` report
(each upstream worker announces its tool list in READY/UPDATE), refreshed in the background.

Change listeners (`add_listener`) hear which lists changed after a refresh: `tools` when a
server's tool set (names or definitions) differs, `resources` / `prompts` when a server's worker
counted another `list_changed` of that kind or the server came, went or was restarted. The MCP
front-ends turn these into `notifications/*/list_changed` to their sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bus.client import BusClient
from bus.errors import BusError
from bus.messages import UPSTREAM_PREFIX

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0
LIST_KINDS = ("tools", "resources", "prompts")

ChangeListener = Callable[[set[str]], None]


@dataclass
class ServerView:
    name: str
    workers: list[dict[str, Any]] = field(default_factory=list)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream name → Tool
    queued: int = 0
    server_info: dict[str, Any] = field(default_factory=dict)  # the upstream's InitializeResult
    list_changes: dict[str, int] = field(default_factory=dict)  # UpstreamLiveMeta.list_changes
    pid: int | None = None  # of the worker the view was built from

    @property
    def up(self) -> bool:
        return bool(self.workers)

    @property
    def capabilities(self) -> dict[str, Any]:
        """The upstream's server capabilities (`resources`, `prompts`, `logging`, ...)."""
        caps = self.server_info.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    def has(self, capability: str) -> bool:
        return self.up and isinstance(self.capabilities.get(capability), dict)

    def signature(self, kind: str) -> Any:
        """What must differ between two refreshes for `kind`'s list to count as changed."""
        if kind == "tools":
            return self.tools
        return (self.pid, self.has(kind), self.list_changes.get(kind, 0))


class Catalog:
    def __init__(self, client: BusClient, servers: list[str], prefixes: dict[str, str] | None = None) -> None:
        self.client = client
        self.configured = servers
        self.prefixes = prefixes or {name: f"{name}." for name in servers}  # config `prefix:`
        self.servers: dict[str, ServerView] = {name: ServerView(name) for name in servers}
        self.exposed: dict[str, tuple[str, str]] = {}  # name MCP clients see → (server, upstream name)
        self.clashes: list[str] = []
        self.services: dict[str, Any] = {}  # the raw report, for /health
        self.bus_ok = False
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[ChangeListener] = []

    def add_listener(self, listener: ChangeListener) -> None:
        """`listener(kinds)` runs after a refresh that changed the lists of `kinds` (in LIST_KINDS)."""
        self._listeners.append(listener)

    def can_subscribe(self) -> bool:
        """Whether any live upstream lets clients subscribe to resource updates."""
        return any(v.has("resources") and v.capabilities["resources"].get("subscribe") is True
                   for v in self.servers.values())

    def has(self, capability: str) -> bool:
        """Whether any live upstream advertises this server capability (e.g. `resources`)."""
        return any(view.has(capability) for view in self.servers.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> None:
        try:
            report = await self.client.request("mmi.services", {}, timeout=1.0)
        except BusError as exc:
            log.debug("catalog refresh failed: %s", exc)
            self.bus_ok = False
            return
        self.bus_ok = True
        self.services = report
        changed: set[str] = set()
        for name in self.configured:
            entry = report.get(UPSTREAM_PREFIX + name) or {}
            workers = entry.get("workers", [])
            view = ServerView(name, workers=workers, queued=entry.get("queued", 0))
            for worker in workers:
                meta = worker.get("meta") or {}
                tools = meta.get("tools") or []
                view.tools = {t["name"]: t for t in tools if isinstance(t, dict) and "name" in t}
                info, changes = meta.get("server_info"), meta.get("list_changes")
                view.server_info = info if isinstance(info, dict) else {}
                view.list_changes = changes if isinstance(changes, dict) else {}
                view.pid = meta.get("pid")
                break
            old = self.servers.get(name)
            changed |= {kind for kind in LIST_KINDS if old is None or old.signature(kind) != view.signature(kind)}
            self.servers[name] = view
        if "tools" in changed:
            self.reindex()
        if changed:
            for listener in self._listeners:
                try:
                    listener(changed)
                except Exception:
                    log.exception("catalog change listener failed")

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_INTERVAL)

    def reindex(self) -> None:
        """Exposed names (`<prefix><tool>`); on a clash the first configured server keeps the name."""
        exposed: dict[str, tuple[str, str]] = {}
        clashes = []
        for server in self.configured:
            for tool in self.servers[server].tools:
                name = self.prefixes[server] + tool
                if name in exposed:
                    clashes.append(f"{name}: {exposed[name][0]} and {server} (kept {exposed[name][0]})")
                    continue
                exposed[name] = (server, tool)
        if clashes and clashes != self.clashes:
            log.error("tool name clashes across upstreams: %s", "; ".join(clashes))
        self.exposed, self.clashes = exposed, clashes

    def split(self, tool: str) -> tuple[ServerView, str] | None:
        """A tool as callers name it → (server view, upstream tool name); None for no such server.

        Exposed names (with each server's prefix) come first; the canonical `<server>.<tool>`
        always works too (REST callers and policies use it)."""
        hit = self.exposed.get(tool)
        if hit is not None:
            return self.servers[hit[0]], hit[1]
        server, dot, name = tool.partition(".")
        view = self.servers.get(server)
        if not dot or not name or view is None:
            return None
        return view, name

    def exposed_tools(self) -> list[dict[str, Any]]:
        """Tools as MCP clients see them: exposed names, schemas passed through untouched."""
        return [{**self.servers[server].tools[tool], "name": name} for name, (server, tool) in self.exposed.items()]

    def tools(self) -> list[dict[str, Any]]:
        """Every known tool as `<server>.<tool>` with its schema passed through untouched."""
        out = []
        for view in self.servers.values():
            for name, tool in view.tools.items():
                out.append({**tool, "name": f"{view.name}.{name}", "server": view.name})
        return out

    def service_summary(self, service: str) -> dict[str, Any]:
        """Live workers of a bus service and how many requests each has served (load sharing)."""
        workers = (self.services.get(service) or {}).get("workers", [])
        return {"workers": len(workers), "served": {w["slot"]: w["served"] for w in workers}}
