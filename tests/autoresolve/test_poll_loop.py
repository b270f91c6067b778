"""The poll loop against a Go-shaped mesh API (GET /approvals is a bare JSON array, as in the Go
project; our own mesh is covered end to end in tests/e2e/test_supervisor.py): an outage is
logged once and survived, the token problem is said once, each approval is decided once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from autoresolve.config import Loaded, Settings
from autoresolve.loop import Supervisor
from autoresolve.memory import Memory
from autoresolve.mesh_api import MeshApi

TOKEN = "go-operator-token"


class GoMesh:
    """The approvals API as the Go agent-mesh answers it."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.down = False
        self.approvals: dict[str, dict[str, Any]] = {}
        self.resolutions: list[tuple[str, str, dict[str, Any]]] = []
        self.app = Starlette(
            routes=[
                Route("/approvals", self.list),
                Route("/approvals/{id}", self.get),
                Route("/approvals/{id}/{decision}", self.resolve, methods=["POST"]),
                Route("/health", self.health),
            ]
        )
        self.transport = httpx.ASGITransport(app=self.app)

    def add(self, approval_id: str, tool: str, params: dict[str, Any]) -> None:
        self.approvals[approval_id] = {
            "id": approval_id,
            "agent_id": "claude",
            "tool": tool,
            "params": params,
            "policy_rule": "claude:rule-1",
            "status": "pending",
            "created_at": "2026-12-02T00:00:00Z",
            "remaining": "4m0s",
            "injection_risk": False,
        }

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "tools": 3, "traces": 0, "version": "0.8.6"})

    async def list(self, request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        return JSONResponse([a for a in self.approvals.values() if status in (None, a["status"])])

    async def get(self, request: Request) -> JSONResponse:
        approval = self.approvals.get(request.path_params["id"])
        if approval is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(approval | {"recent_traces": [], "active_grants": []})

    async def resolve(self, request: Request) -> JSONResponse:
        if self.token and request.headers.get("x-operator-token") != self.token:
            return JSONResponse({"error": "operator token required"}, status_code=403)
        approval = self.approvals.get(request.path_params["id"])
        if approval is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        if approval["status"] != "pending":
            return JSONResponse({"error": "already resolved"}, status_code=409)
        decision = request.path_params["decision"]
        approval["status"] = "approved" if decision == "approve" else "denied"
        self.resolutions.append((approval["id"], decision, await request.json()))
        return JSONResponse({"status": approval["status"]})


class Switch(httpx.AsyncBaseTransport):
    """The fake mesh's transport, with a switch that makes it unreachable."""

    def __init__(self, mesh: GoMesh) -> None:
        self.mesh = mesh

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.mesh.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.mesh.transport.handle_async_request(request)


def supervisor(
    tmp_path: Any, mesh: GoMesh, token: str | None = None, dry_run: bool = False
) -> Supervisor:
    settings = Settings.model_validate(
        {
            "poll_interval": "20ms",
            "rules": [
                {
                    "name": "tmp",
                    "condition": "params.path starts_with /tmp",
                    "action": "approve",
                    "confidence": 0.9,
                },
                {"name": "rest", "action": "deny"},
            ],
        }
    )
    api = MeshApi("http://go-mesh", operator_token=token, transport=Switch(mesh))
    return Supervisor(
        Loaded(settings, tmp_path / "s.yaml"), api, Memory(tmp_path / "d.db"), None, dry_run
    )


async def run_for(sv: Supervisor, until: Any, timeout: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sv.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not until():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def test_go_shapes_are_resolved_once(tmp_path: Any) -> None:
    mesh = GoMesh()
    mesh.add("a" * 16, "fs.write_file", {"path": "/tmp/x"})
    mesh.add("b" * 16, "fs.write_file", {"path": "/etc/x"})
    sv = supervisor(tmp_path, mesh)
    await run_for(sv, lambda: len(mesh.resolutions) == 2)
    resolutions = {
        approval_id: (decision, body) for approval_id, decision, body in mesh.resolutions
    }
    assert resolutions["a" * 16] == (
        "approve",
        {
            "resolved_by": "supervisor:tmp",
            "confidence": 0.9,
            "reasoning": "rule tmp (*; condition params.path starts_with /tmp)",
        },
    )
    assert resolutions["b" * 16][0] == "deny"
    # a restarted supervisor does not decide them again, even if the mesh still lists them
    for approval in mesh.approvals.values():
        approval["status"] = "pending"
    again = supervisor(tmp_path, mesh)
    await again.poll_once()
    assert not again.inflight
    assert len(mesh.resolutions) == 2


async def test_an_outage_is_logged_once(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "autoresolve")
    mesh = GoMesh()
    mesh.down = True
    sv = supervisor(tmp_path, mesh)
    stop = asyncio.Event()
    task = asyncio.create_task(sv.run(stop))
    await asyncio.sleep(0.6)  # many polls' worth
    assert sum("unavailable" in r.message for r in caplog.records) == 1
    mesh.down = False
    mesh.add("c" * 16, "fs.write_file", {"path": "/tmp/y"})
    async with asyncio.timeout(5):
        while not mesh.resolutions:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert (
        sum(
            "connected to the mesh" in r.message and "unavailable for" in r.message
            for r in caplog.records
        )
        == 1
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "requires an operator token"), ("wrong-token", "refused our operator token")],
)
async def test_token_problem_said_once(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, token: str | None, message: str
) -> None:
    caplog.set_level(logging.INFO, "autoresolve")
    mesh = GoMesh(token=TOKEN)
    for i in range(3):
        mesh.add(f"{i}" * 16, "fs.write_file", {"path": "/tmp/z"})
    sv = supervisor(tmp_path, mesh, token=token)
    await run_for(sv, lambda: sum("[refused]" in r.getMessage() for r in caplog.records) == 3)
    assert sum(message in r.getMessage() for r in caplog.records) == 1
    assert not mesh.resolutions


async def test_right_token_resolves(tmp_path: Any) -> None:
    mesh = GoMesh(token=TOKEN)
    mesh.add("d" * 16, "fs.write_file", {"path": "/tmp/z"})
    await run_for(supervisor(tmp_path, mesh, token=TOKEN), lambda: mesh.resolutions)


async def test_ready_without_a_ready_route(tmp_path: Any) -> None:
    """The Go binary has no /ready: /health with status ok says it."""
    mesh = GoMesh()
    api = MeshApi("http://go-mesh", transport=Switch(mesh))
    assert await api.ready()
    assert await api.health() == {"status": "ok", "tools": 3, "traces": 0, "version": "0.8.6"}
    mesh.down = True
    assert not await api.ready()
    assert await api.health() is None
    await api.aclose()
