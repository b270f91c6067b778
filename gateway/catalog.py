"""The gateway's view of the upstream tools: built from the broker's `mmi.services` report
(each upstream worker announces its tool list in READY/UPDATE), refreshed in the background.

Change listeners (`add_listener`) hear which lists changed after a refresh: `tools` when a
server's tool set (names or definitions) differs, `resources` / `prompts` when a server's worker
counted another `list_changed` of that kind or the server came, went or was restarted. The MCP
front-ends turn these into `notifications/*/list_changed` to their sessions. Worker listeners
(`add_worker_listener`) hear which servers got a new set of upstream sessions (a worker restarted,
joined or left, or replaced its MCP server), e.g. to renew what the old ones held (subscriptions).

Each server's lifecycle is what its worker processes report as `upstream-state.<server>`
(`ServerView.states`, `.lifecycle`, gateway/upstream_health.py); a server none of whose workers
runs an upstream has the reason they give (`ServerView.reason`).

With `pins` (gateway/pins.py) every refresh whose tools changed records the MCP servers' tool
definitions there (pinned on first sight, a change held), and MCP clients are shown a held
tool's pinned definition, not the changed one (`exposed_tools`).

Refreshes come every REFRESH_INTERVAL and, with the broker's events endpoint, at once after any
worker's ready / down / updated event (and a `tool.*` pinning event): a restarted worker is in
the catalogue within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bus.client import BusClient
from bus.errors import BusError
from bus.events import Subscriber
from bus.messages import UPSTREAM_PREFIX, UPSTREAM_STATE_PREFIX, UpstreamState
from gateway import upstream_health
from gateway.pins import Pins
from mesh_config.sources import DISPATCH, SUBCOMMAND, SourceRef
from policy.pinning import PINNED_FIELDS

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
    sessions: frozenset[str] = (
        frozenset()
    )  # every live worker's upstream session (UpstreamMeta.session)
    states: list[UpstreamState] = field(default_factory=list)  # of its worker processes
    prefix: str = ""  # of its tools' canonical names (policies, traces); set from its SourceRef
    kind: str = "mcp"  # mcp | cli | openapi
    any_subcommand: bool = False  # a non-strict CLI tool: any `<name>.<subcommand>` is a tool

    def serves(self, tool: str) -> bool:
        """Whether `tool` (its own name, without prefix) is one of this source's tools."""
        return tool in self.tools or (self.any_subcommand and bool(SUBCOMMAND.fullmatch(tool)))

    def canonical(self, tool: str) -> str:
        return self.prefix + tool

    @property
    def up(self) -> bool:
        return bool(self.workers)

    @property
    def lifecycle(self) -> UpstreamState:
        """The server's state: its best worker process's (gateway/upstream_health.py)."""
        return upstream_health.overall(self.name, self.states, self.up)

    @property
    def reason(self) -> str:
        """Why the server is down, as its workers last said when its starts keep failing
        (`command 'x' not found on PATH`, `exited with code 1: ...`); "" when it is up, or
        between a worker's death and the spare's takeover (the broker's error says it then)."""
        if self.up or not self.states:
            return ""
        life = self.lifecycle
        return life.reason if life.failures else ""

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
    def __init__(
        self,
        client: BusClient,
        servers: list[str],
        prefixes: dict[str, str] | None = None,
        *,
        sources: list[SourceRef] | None = None,
    ) -> None:
        """`sources` (config.sources()) gives each its canonical prefix and kind; without them
        every server is an MCP server whose tools are `<server>.<tool>`."""
        self.client = client
        if sources is not None:
            servers, prefixes = (
                [s.name for s in sources],
                {s.name: s.exposed_prefix for s in sources},
            )
        refs = {s.name: s for s in sources or []}
        self._shape = {
            name: (refs[name].prefix, refs[name].kind, refs[name].any_subcommand)
            if name in refs
            else (f"{name}.", "mcp", False)
            for name in servers
        }
        self.configured = servers
        self.prefixes = prefixes or {name: f"{name}." for name in servers}  # config `prefix:`
        self.servers: dict[str, ServerView] = {name: self._view(name) for name in servers}
        self.exposed: dict[
            str, tuple[str, str]
        ] = {}  # name MCP clients see → (server, upstream name)
        # canonical name → (server, tool) of every tool ever seen: a source whose tools have no
        # `<server>.` prefix (an unnamed OpenAPI import) is still found while it is down
        self.known: dict[str, tuple[str, str]] = {}
        self.clashes: list[str] = []
        self.services: dict[str, Any] = {}  # the raw report, for /health
        self.bus_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[ChangeListener] = []
        self._worker_listeners: list[ChangeListener] = []
        self._poke = asyncio.Event()  # refresh now
        self.pins: Pins | None = None  # tool pinning (gateway/frontend.py sets it)

    def add_listener(self, listener: ChangeListener) -> None:
        """`listener(kinds)` runs after a refresh that changed the lists of `kinds` (in
        LIST_KINDS)."""
        self._listeners.append(listener)

    def can_subscribe(self) -> bool:
        """Whether any live upstream lets clients subscribe to resource updates."""
        return any(
            v.has("resources") and v.capabilities["resources"].get("subscribe") is True
            for v in self.servers.values()
        )

    def has(self, capability: str) -> bool:
        """Whether any live upstream advertises this server capability (e.g. `resources`)."""
        return any(view.has(capability) for view in self.servers.values())

    def add_worker_listener(self, listener: ChangeListener) -> None:
        """`listener(servers)` runs after a refresh in which those servers' upstream sessions
        changed."""
        self._worker_listeners.append(listener)

    def start(self, events_endpoint: str | None = None) -> None:
        self._tasks.append(asyncio.create_task(self._refresh_forever()))
        if events_endpoint is not None:
            self._tasks.append(asyncio.create_task(self._follow_workers(events_endpoint)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        renewed: set[str] = set()
        for name in self.configured:
            entry = report.get(UPSTREAM_PREFIX + name) or {}
            workers = entry.get("workers", [])
            view = self._view(name, workers=workers, queued=entry.get("queued", 0))
            view.sessions = frozenset(str((w.get("meta") or {}).get("session")) for w in workers)
            for worker in workers:
                meta = worker.get("meta") or {}
                tools = meta.get("tools") or []
                view.tools = {t["name"]: t for t in tools if isinstance(t, dict) and "name" in t}
                info, changes = meta.get("server_info"), meta.get("list_changes")
                view.server_info = info if isinstance(info, dict) else {}
                view.list_changes = changes if isinstance(changes, dict) else {}
                view.pid = meta.get("pid")
                break
            states = (report.get(UPSTREAM_STATE_PREFIX + name) or {}).get("workers", [])
            view.states = upstream_health.parse(states)
            old = self.servers.get(name)
            changed |= {
                kind
                for kind in LIST_KINDS
                if old is None or old.signature(kind) != view.signature(kind)
            }
            if old is not None and old.sessions != view.sessions:
                renewed.add(name)
            self.servers[name] = view
        if "tools" in changed:
            self.reindex()
        if self.pins is not None:
            self._pin("tools" in changed)
        for listeners, what in ((self._listeners, changed), (self._worker_listeners, renewed)):
            for listener in listeners if what else ():
                try:
                    listener(what)
                except Exception:
                    log.exception("catalog listener failed")

    def _pin(self, tools_changed: bool) -> None:
        assert self.pins is not None
        for view in self.servers.values() if tools_changed else ():
            if view.kind == "mcp" and view.up:
                self.pins.observe(
                    view.name, {view.canonical(t): tool for t, tool in view.tools.items()}
                )
        self.pins.reload()  # what another front-end accepted meanwhile

    def _view(self, name: str, **fields: Any) -> ServerView:
        prefix, kind, any_subcommand = self._shape[name]
        return ServerView(name, prefix=prefix, kind=kind, any_subcommand=any_subcommand, **fields)

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            # asyncio.timeout, not wait_for: 3.11's wait_for returns a poke that comes with a
            # cancel and drops the cancel (the loop ran on; the gateway was killed at stop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_INTERVAL):
                    await self._poke.wait()
            self._poke.clear()

    async def _follow_workers(self, endpoint: str) -> None:
        # tool.<server>.changed / .accepted: another front-end recorded or accepted a change
        subscriber = Subscriber(endpoint, "worker.", "tool.")
        try:
            async for _ in subscriber:
                self._poke.set()
        finally:
            subscriber.close()

    def reindex(self) -> None:
        """Exposed names (`<prefix><tool>`); on a clash the first configured server keeps the
        name."""
        exposed: dict[str, tuple[str, str]] = {}
        clashes = []
        for server in self.configured:
            view = self.servers[server]
            self.known.update((view.canonical(tool), (server, tool)) for tool in view.tools)
            for tool in view.tools:
                name = self.prefixes[server] + tool
                if name in exposed:
                    clashes.append(
                        f"{name}: {exposed[name][0]} and {server} (kept {exposed[name][0]})"
                    )
                    continue
                exposed[name] = (server, tool)
        if clashes and clashes != self.clashes:
            log.error("tool name clashes across upstreams: %s", "; ".join(clashes))
        self.exposed, self.clashes = exposed, clashes

    def split(self, tool: str) -> tuple[ServerView, str] | None:
        """A tool as callers name it → (server view, upstream tool name); None for no such server.

        Exposed names (with each server's prefix) come first; the canonical name (`<server>.<tool>`,
        or as an unnamed OpenAPI import names it) always works too (REST callers and policies use
        it)."""
        hit = self.exposed.get(tool) or self.known.get(tool)
        if hit is not None:
            return self.servers[hit[0]], hit[1]
        server, dot, name = tool.partition(".")
        view = self.servers.get(server)
        if not dot or not name or view is None or view.prefix != f"{server}.":
            return None
        return view, name

    def dispatched(
        self, view: ServerView, tool: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The Go project's `<cli>.__dispatch {command, ...}` is `<cli>.<command>`: the policy and
        the trace see the real subcommand. (tool, params) to call, or None when it is not one."""
        if not view.any_subcommand or tool != DISPATCH:
            return None
        command = params.get("command")
        command = ".".join(command.split()) if isinstance(command, str) else ""
        return command, {k: v for k, v in params.items() if k != "command"}

    def exposed_tools(self) -> list[dict[str, Any]]:
        """Tools as MCP clients see them: exposed names, schemas passed through untouched (a
        held tool's pinned definition: its changed description does not reach the model)."""
        return [
            {**self._shown(self.servers[server], tool), "name": name}
            for name, (server, tool) in self.exposed.items()
        ]

    def _shown(self, view: ServerView, tool: str) -> dict[str, Any]:
        listed = view.tools[tool]
        pinned = self.pins.pinned(view.canonical(tool)) if self.pins is not None else None
        if pinned is None:
            return listed
        return {k: v for k, v in listed.items() if k not in PINNED_FIELDS} | pinned

    def tools(self) -> list[dict[str, Any]]:
        """Every known tool by its canonical name (`<server>.<tool>`) with its schema passed
        through untouched, its server and its kind of source (`source`: mcp, cli, openapi)."""
        out = []
        for view in self.servers.values():
            for name, tool in view.tools.items():
                out.append(
                    {**tool, "name": view.canonical(name), "server": view.name, "source": view.kind}
                )
        return out

    def service_summary(self, service: str) -> dict[str, Any]:
        """Live workers of a bus service and how many requests each has served (load sharing)."""
        workers = (self.services.get(service) or {}).get("workers", [])
        return {"workers": len(workers), "served": {w["slot"]: w["served"] for w in workers}}
