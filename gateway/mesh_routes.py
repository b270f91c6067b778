"""The REST routes about the mesh itself: its catalogue (`/tools`, `/mcp-servers`), `/health`,
`/ready`, `/version`, and the operator routes (gateway/operators.py) `POST /reload` and
`POST /tools/{name}/accept` (a changed tool's new definition pinned: gateway/pins.py)."""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.approval_messages import FreezeList
from bus.messages import APPROVAL, POLICY, TRACES
from gateway import api_shapes as shapes
from gateway import last_resort, upstream_health
from gateway.api_answers import (
    error_answer,
)
from gateway.api_requests import AcceptBody
from gateway.api_route import Answer, ApiRoute
from gateway.api_views import server_view, tool_view
from gateway.approval_ask import caller
from gateway.frontend import FrontEnd
from gateway.http_edge import error
from gateway.operators import Operators
from gateway.peers import ForwardedReload
from gateway.reload import Reloader

VERSION = version("agent-mesh")  # as installed, from pyproject.toml


class MeshRoutes:
    def __init__(
        self, frontend: FrontEnd, reloader: Reloader | ForwardedReload, operators: Operators
    ) -> None:
        self.frontend = frontend
        self.catalog = frontend.catalog
        self.reloader = reloader
        self.operators = operators

    async def tools(self, request: Request) -> Response:
        pins = self.frontend.pins
        return JSONResponse(
            [tool_view(t) | pins.status(t["name"], t["server"], t) for t in self.catalog.tools()]
        )

    async def accept(self, request: Request, body: AcceptBody) -> Response:
        """`mesh tools accept <tool>`: pin the definition the tool lists now (operator route);
        its calls are served as before. The acceptance is an audit event."""
        agent = self.operators.check(request)
        if agent is not None:
            return error(403, f"agent {agent} cannot accept tool definitions; an operator can")
        name = request.path_params["name"]
        found = self.catalog.split(name)
        tool = found[0].canonical(found[1]) if found is not None else name
        by = body.accepted_by or caller(request)
        try:
            change = self.frontend.pins.accept(tool, by, body.fingerprint)
        except LookupError:
            return error(404, f"{tool} has no changed definition to accept (see GET /tools)")
        except ValueError as exc:
            return error(
                409,
                f"{tool} changed again: its definition is now {str(exc)[:12]}, not "
                f"{body.fingerprint}; look at the diff in /health and accept that one",
            )
        return JSONResponse(
            {
                "status": "accepted",
                "tool": tool,
                "fingerprint": change.new_fingerprint,
                "accepted_by": by,
                "diff": change.diff,
            }
        )

    async def mcp_servers(self, request: Request) -> Response:
        servers = []
        for spec in self.frontend.loaded.config.sources():  # stdio, sse, ..., cli or openapi
            view = self.catalog.servers[spec.name]
            servers.append(
                server_view(
                    spec.name,
                    spec.transport,
                    [view.canonical(t) for t in view.tools],
                    view.up,
                    {
                        "workers": [
                            {k: w.get(k) for k in ("slot", "inflight", "served")}
                            | {"pid": (w.get("meta") or {}).get("pid")}
                            for w in view.workers
                        ],
                        "configured_workers": spec.workers,
                        "queued": view.queued,
                        "state": view.lifecycle.state.value,
                        **({"error": view.reason} if view.reason else {}),
                    },
                )
            )
        return JSONResponse(servers)

    async def _status(self) -> tuple[bool, dict[str, Any]]:
        """Whether every role and upstream is up, and the detail of each."""
        await self.catalog.refresh()
        upstreams = {
            name: ("up" if view.up else "down") for name, view in self.catalog.servers.items()
        }
        # Why each down upstream is down, as its workers said (gateway/upstream_health.py).
        errors = {name: view.reason for name, view in self.catalog.servers.items() if view.reason}
        states = {
            name: upstream_health.view(name, view.states, view.up)
            for name, view in self.catalog.servers.items()
        }
        services = {name: self.catalog.service_summary(name) for name in (POLICY, TRACES, APPROVAL)}
        ok = (
            self.catalog.bus_ok
            and all(s["workers"] for s in services.values())
            and all(v == "up" for v in upstreams.values())
        )
        return ok, {
            "bus": "up" if self.catalog.bus_ok else "down",
            "services": services,
            "upstreams": upstreams,
            **({"upstream_errors": errors} if errors else {}),
            "upstream_states": states,
            "trace_backlog": self.frontend.outbox.backlog,
            "internal_errors": last_resort.internal_errors(),
            "pid": os.getpid(),
        }

    async def health(self, request: Request) -> Response:
        """Go's {status, tools, traces, version}: 200 whenever the gateway answers."""
        ok, detail = await self._status()
        client = self.frontend.client
        answers: tuple[Any, Any] = await asyncio.gather(
            client.request(TRACES, {"op": "stats"}, timeout=2.0),
            client.request(APPROVAL, FreezeList().dump(), timeout=2.0),
            return_exceptions=True,
        )
        stats, frozen = answers
        if isinstance(stats, BaseException):
            stats, ok = {}, False
        # How many freezes hold, not whom they stop nor why: /health is public (GET /freezes
        # says the rest); absent when the approval service did not answer.
        freezes = (
            {}
            if isinstance(frozen, BaseException)
            else {"freezes": {"count": len(frozen["freezes"]), "all": _all(frozen["freezes"])}}
        )
        changes = [c.view() for c in self.frontend.pins.held.values()]
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "tools": len(self.catalog.tools()),
                "traces": stats,
                "version": VERSION,
                **detail,
                "policy_set": self.reloader.view(),
                **({"tool_changes": changes} if changes else {}),
                **freezes,
            }
        )

    async def ready(self, request: Request) -> Response:
        """Readiness for probes and waiters: 200 when every role and upstream is up, else 503."""
        ok, detail = await self._status()
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **detail}, status_code=200 if ok else 503
        )

    async def version(self, request: Request) -> Response:
        return JSONResponse(
            {
                "version": VERSION,
                "commit": "none",
                "date": "unknown",
                "name": "agent-mesh",
                "implementation": "python",
            }
        )

    async def reload(self, request: Request) -> Response:
        """`mesh reload`: read the config and its policy_dir again (operator route). 200 with the
        set in force (`status` reloaded | unchanged), 422 when the new config is invalid (the old
        set stays; `error` says why)."""
        agent = self.operators.check(request)
        if agent is not None:
            return error(
                403,
                f"agent {agent} cannot reload the mesh's policies; an operator can "
                "(without an agent's bearer)",
            )
        passed_on = {
            k: v for k, v in request.headers.items() if k in ("authorization", "x-operator-token")
        }
        answer = await self.reloader.reload("mesh reload", passed_on)
        return JSONResponse(answer, status_code=422 if answer["status"] == "invalid" else 200)

    def catalog_routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "GET",
                "/tools",
                self.tools,
                "Every upstream tool",
                {
                    200: Answer(list[shapes.ToolView], "The tools, as `<server>.<tool>`."),
                },
                tags=["catalog"],
            ),
            ApiRoute(
                "GET",
                "/mcp-servers",
                self.mcp_servers,
                "Every upstream server and its workers",
                {
                    200: Answer(list[shapes.ServerView], "One entry per configured source."),
                },
                tags=["catalog"],
            ),
            ApiRoute(
                "POST",
                "/tools/{name}/accept",
                self.accept,
                "Accept a tool's changed definition",
                {
                    200: Answer(shapes.ToolAccepted, "Pinned: its calls are served as before."),
                    404: error_answer(
                        "The tool has no changed definition to accept.",
                        "fs.read_file has no changed definition to accept (see GET /tools)",
                    ),
                    409: error_answer(
                        "`fingerprint` names an older change than the one listed now.",
                        "fs.read_file changed again: its definition is now 5f0c9e21aa03, not 1b2c",
                    ),
                },
                body=AcceptBody,
                operator=True,
                path_params={
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "examples": ["filesystem.read_file"],
                        "description": "<server>.<tool>",
                    }
                },
                tags=["catalog"],
            ),
        ]

    def operation_routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "POST",
                "/reload",
                self.reload,
                "Read the config and its policies again",
                {
                    200: Answer(
                        shapes.Reloaded, "The policy set in force (`reloaded` or `unchanged`)."
                    ),
                    422: Answer(
                        shapes.Reloaded,
                        "The new config is invalid: the old set stays, `error` says why.",
                    ),
                },
                operator=True,
                tags=["operations"],
            ),
            ApiRoute(
                "GET",
                "/health",
                self.health,
                "Health: 200 whenever the gateway answers",
                {
                    200: Answer(
                        shapes.Health, "`status` ok or degraded, with the detail of each part."
                    ),
                },
                tags=["operations"],
            ),
            ApiRoute(
                "GET",
                "/ready",
                self.ready,
                "Readiness: 200 when every role and upstream is up",
                {
                    200: Answer(shapes.Ready, "Ready."),
                    503: Answer(shapes.Ready, "Not ready: the detail says what is down."),
                },
                tags=["operations"],
            ),
            ApiRoute(
                "GET",
                "/version",
                self.version,
                "Version",
                {
                    200: Answer(
                        shapes.Version,
                        "This mesh's version.",
                        {
                            "version": VERSION,
                            "commit": "none",
                            "date": "unknown",
                            "name": "agent-mesh",
                            "implementation": "python",
                        },
                    ),
                },
                tags=["operations"],
            ),
        ]


def _all(freezes: list[dict[str, Any]]) -> bool:
    return any(f["kind"] == "all" for f in freezes)
