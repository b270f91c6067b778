"""The gateway's view of the upstream tools: built from the broker's `mmi.services` report
(each upstream worker announces its tool list in READY/UPDATE), refreshed in the background.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from bus.client import BusClient
from bus.errors import BusError
from bus.messages import UPSTREAM_PREFIX

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0


@dataclass
class ServerView:
    name: str
    workers: list[dict[str, Any]] = field(default_factory=list)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream name → Tool
    queued: int = 0

    @property
    def up(self) -> bool:
        return bool(self.workers)


class Catalog:
    def __init__(self, client: BusClient, servers: list[str]) -> None:
        self.client = client
        self.configured = servers
        self.servers: dict[str, ServerView] = {name: ServerView(name) for name in servers}
        self.services: dict[str, Any] = {}  # the raw report, for /health
        self.bus_ok = False
        self._task: asyncio.Task[None] | None = None

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
        for name in self.configured:
            entry = report.get(UPSTREAM_PREFIX + name) or {}
            workers = entry.get("workers", [])
            view = ServerView(name, workers=workers, queued=entry.get("queued", 0))
            for worker in workers:
                tools = (worker.get("meta") or {}).get("tools") or []
                view.tools = {t["name"]: t for t in tools if isinstance(t, dict) and "name" in t}
                break
            self.servers[name] = view

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_INTERVAL)

    def split(self, tool: str) -> tuple[ServerView, str] | None:
        """`server.tool` → (server view, upstream tool name), None when no such server."""
        server, dot, name = tool.partition(".")
        view = self.servers.get(server)
        if not dot or not name or view is None:
            return None
        return view, name

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
