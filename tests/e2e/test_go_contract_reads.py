"""The HTTP API's catalogue, traces, sessions and health in the Go agent-mesh's shapes (see
test_go_contract.py; the same mesh and shapes: tests/e2e/go_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.go_contract import (
    call,
    check,
    is_int,
    is_rfc3339,
    trace_entry,
    traces,
)
from tests.e2e.mesh import Mesh
from tests.support import wait_until


@pytest.fixture(scope="module")
def mesh(go_contract_mesh: Mesh) -> Mesh:
    return go_contract_mesh


@pytest.fixture(scope="module")
def demo(mesh: Mesh) -> Path:
    """The directory the mesh's filesystem server serves."""
    return mesh.tmp / "demo"


# -- catalogue, traces, sessions, health --------------------------------------------------------


def test_tools(mesh: Mesh) -> None:
    tools = mesh.http.get("/tools").json()
    assert isinstance(tools, list) and tools
    for tool in tools:
        check(
            tool,
            {
                "name": str,
                "description": str,
                "method": str,
                "path": str,
                "base_url": str,
                "source": str,
                "mcp_server": str,
            },
            {"params": list},
        )
        assert (tool["source"], tool["mcp_server"]) == ("mcp", "fs") and tool["name"].startswith(
            "fs."
        )
        for param in tool.get("params", []):
            check(param, {"name": str, "in": str, "type": str, "required": bool})
    (listing,) = [t for t in tools if t["name"] == "fs.list_directory"]
    assert {"name": "path", "in": "body", "type": "string", "required": True} in listing["params"]


def test_mcp_servers(mesh: Mesh) -> None:
    (server,) = mesh.http.get("/mcp-servers").json()
    check(server, {"name": str, "transport": str, "status": str, "tools": list}, {"error": str})
    assert (server["name"], server["transport"], server["status"]) == ("fs", "stdio", "ready")
    assert "fs.list_directory" in server["tools"] and all(
        isinstance(t, str) for t in server["tools"]
    )


def test_traces_newest_first_and_filtered(mesh: Mesh, demo: Path) -> None:
    first = call(mesh, "fs.list_directory", {"path": str(demo)}, agent="dev-filter").json()[
        "trace_id"
    ]
    second = call(
        mesh, "fs.get_file_info", {"path": str(demo / "a.txt")}, agent="dev-filter"
    ).json()["trace_id"]
    wait_until(lambda: len(traces(mesh, agent="dev-filter")) == 2, 5, "both traces")
    assert [t["trace_id"] for t in traces(mesh, agent="dev-filter")] == [second, first]
    assert [t["trace_id"] for t in traces(mesh, agent="dev-filter", tool="fs.list_directory")] == [
        first
    ]
    assert len(traces(mesh)) <= 100  # Go's default cap


def test_sessions(mesh: Mesh, demo: Path) -> None:
    ids = [
        call(mesh, tool, {"path": str(demo), "n": n}, headers={"X-Session-Id": "go-s2"}).json()[
            "trace_id"
        ]
        for n, tool in enumerate(("fs.list_directory", "fs.list_directory", "fs.get_file_info"))
    ]
    wait_until(lambda: len(mesh.http.get("/sessions/go-s2").json()) == 3, 5, "the session's traces")
    events = [trace_entry(e) for e in mesh.http.get("/sessions/go-s2").json()]
    assert [e["trace_id"] for e in events] == ids[::-1]  # newest first
    (summary,) = [s for s in mesh.http.get("/sessions").json() if s["session_id"] == "go-s2"]
    check(
        summary,
        {
            "session_id": str,
            "agent_id": str,
            "event_count": int,
            "first_seen": str,
            "last_seen": str,
            "tools": list,
        },
    )
    assert (summary["agent_id"], summary["event_count"]) == ("dev-1", 3)
    assert sorted(summary["tools"]) == ["fs.get_file_info", "fs.list_directory"]
    assert is_rfc3339(summary["first_seen"]) and summary["first_seen"] <= summary["last_seen"]


def test_health_version_ready(mesh: Mesh) -> None:
    r = mesh.http.get("/health")
    health = check(r.json(), {"status": str, "tools": int, "traces": dict, "version": str})
    assert r.status_code == 200 and health["status"] == "ok"
    assert health["tools"] == len(mesh.http.get("/tools").json())
    stats = health["traces"]
    assert set(stats) == {
        "total",
        "allowed",
        "denied",
        "human_approval",
        "errors",
        "estimated_input_tokens",
        "estimated_output_tokens",
    } and all(is_int(n) for n in stats.values())
    assert stats["total"] >= stats["allowed"] + stats["denied"] + stats["human_approval"]
    assert mesh.http.get("/ready").status_code == 200
    check(mesh.http.get("/version").json(), {"version": str, "commit": str, "date": str})
