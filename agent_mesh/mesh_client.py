"""The mesh's HTTP API as the `mesh` CLI and `mesh watch` read it: the client (`Mesh`, one-line
`MeshError`s), the tables' columns and rows, and the approve/deny call both commands make."""

from __future__ import annotations

import os
import shutil
from typing import Any

import httpx

from agent_mesh.errors import connection_reason
from agent_mesh.tables import Column, clock, text

DEFAULT_URL = "http://localhost:9090"


class MeshError(Exception):
    """What went wrong, in one line, for the person at the terminal."""


class Mesh:
    def __init__(self, url: str) -> None:
        self.url = (
            url.rstrip("/") if "://" in url else "http://" + url.rstrip("/")
        )  # host:port will do
        token = os.environ.get("MESH_OPERATOR_TOKEN")
        self.headers = {"X-Operator-Token": token} if token else {}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = httpx.request(
                method, self.url + path, headers=self.headers, timeout=10, **kw
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise MeshError(
                f"invalid mesh URL {self.url!r}: {exc} (set MESH_URL or --url)"
            ) from None
        except httpx.HTTPError as exc:
            raise MeshError(
                f"cannot reach {self.url}: {connection_reason(exc)}; is the mesh running? "
                "(set MESH_URL or --url)"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise MeshError(
                f"{method} {path}: HTTP {response.status_code} without a JSON body: is {self.url} "
                "an agent-mesh? (set MESH_URL or --url)"
            ) from None
        answered = (path == "/health" and response.status_code == 503) or (
            path == "/reload" and response.status_code == 422
        )  # an invalid config: said by `run`
        if response.status_code >= 400 and not answered:
            error = body.get("error", body) if isinstance(body, dict) else body
            hint = ""
            if (
                response.status_code in (401, 403)
                and "operator token" in str(error)
                and not self.headers
            ):
                hint = " (set MESH_OPERATOR_TOKEN)"
            raise MeshError(f"{method} {path}: {error} (HTTP {response.status_code}){hint}")
        return body


def items(body: Any) -> list[dict[str, Any]]:
    """A list answer (the API answers lists as bare arrays, as the Go agent-mesh does)."""
    if not isinstance(body, list):
        raise MeshError(
            f"expected a list from the mesh, got {type(body).__name__} (is MESH_URL an agent-mesh?)"
        )
    return [item for item in body if isinstance(item, dict)]


def columns_of_terminal() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def count(value: Any) -> Any:
    return len(value) if isinstance(value, list | dict) else value


def id8(value: Any) -> str:
    return str(value or "")[:8]


PENDING = [
    Column("id", "ID", min=8, shrink=None, render=id8),
    Column("created_at", "TIME", min=8, shrink=None, render=clock),
    Column("agent_id", "AGENT", min=6, shrink=2),
    Column("tool", "TOOL", shrink=None),
    Column("risk", "RISK", min=0, shrink=1),
    Column("params", "PARAMS", min=0, shrink=0),
]
TRACES = [
    Column("timestamp", "TIME", min=8, shrink=None, render=clock),
    Column("agent_id", "AGENT", min=6, shrink=3),
    Column("tool", "TOOL", shrink=None),
    Column("policy", "POLICY", min=5, shrink=4),
    Column("status_code", "ST", min=3, shrink=None),
    Column(
        "latency_ms",
        "MS",
        min=0,
        shrink=2,
        right=True,
        render=lambda v: (
            "" if v is None else f"{float(v):.0f}" if float(v) >= 10 else f"{float(v):.1f}"
        ),
    ),
    Column("detail", "PARAMS / ERROR", min=0, shrink=0, wrap="error"),
]
GRANTS = [
    Column("id", "ID", min=8, shrink=None, render=id8),
    Column("agent", "AGENT", min=6, shrink=1),
    Column("globs", "TOOLS", min=10, shrink=0),
    Column("expires_at", "UNTIL", min=8, shrink=None, render=clock),
    Column("remaining", "LEFT", min=0, shrink=2),
    Column("by", "BY", min=0, shrink=0),
]


def globs(grant: dict[str, Any]) -> list[str]:
    """A grant's tool globs: `tool_globs`, else `tools` as a list or Go's comma-joined string."""
    found = grant.get("tool_globs") or grant.get("tools") or []
    return [g for g in (found.split(",") if isinstance(found, str) else found) if g]


def grant_rows(grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**g, "globs": ", ".join(globs(g)), "by": g.get("granted_by") or g.get("created_by")}
        for g in grants
    ]


def pending_rows(approvals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "risk": "INJECTION?" if a.get("injection_risk") else ""} for a in approvals]


def trace_rows(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "detail": t.get("error") or text(t.get("params"))} for t in traces]


def resolve(mesh: Mesh, approval_id: str, decision: str, reasoning: str | None) -> Any:
    return mesh.call(
        "POST",
        f"/approvals/{approval_id}/{decision}",
        json={"resolved_by": os.environ.get("USER", "human"), "reasoning": reasoning},
    )


def resolution_line(body: dict[str, Any]) -> str:
    return f"{id8(body.get('id'))}: {body.get('status')}"
