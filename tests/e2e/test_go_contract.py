"""The HTTP API answers in the Go agent-mesh's shapes, route by route, against a running mesh.

Written from the Go project's `proxy/handler.go` and the types it encodes (`ToolCallResponse`,
`trace.Entry`, `trace.SessionSummary`, `approvalView`, `grantView`, `registry.Tool`,
`mcp.ServerStatus`): a client written for the Go binary must run unchanged. So: lists are bare
arrays (`[]` when empty), numbers Go holds as int64 are JSON integers, times are RFC 3339
strings, optional fields are absent rather than `null`. Our extra fields may ride along; they
are not checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, wait_until

APPROVAL_TIMEOUT = 3
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+s$")  # time.Duration.String() of whole seconds


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Iterator[Mesh]:
    config = {
        "approval": {"timeout_seconds": APPROVAL_TIMEOUT, "memory_threshold": 0},
        "trace_file": "traces.jsonl",
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "devs",
                "agent": "dev-*",
                "rules": [
                    {"tools": ["fs.read_*", "fs.list_*", "fs.get_*"], "action": "allow"},
                    {"tools": ["fs.write_file", "fs.create_directory"], "action": "human_approval"},
                    {"tools": ["fs.*"], "action": "deny"},
                ],
            },
            {
                "name": "bursty",
                "agent": "burst",
                "rate_limit": {"max_per_minute": 2},
                "rules": [{"tools": ["fs.*"], "action": "allow"}],
            },
            {"name": "default", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


# -- shape checks ------------------------------------------------------------------------------

Kind = type | tuple[type, ...]
NUMBER = (int, float)


def is_int(value: Any) -> bool:
    return type(value) is int  # Go int / int64: a JSON integer (not 3.0, not a bool)


def is_rfc3339(value: Any) -> bool:
    return (
        isinstance(value, str) and "T" in value and datetime.fromisoformat(value).tzinfo is not None
    )


def check(
    obj: Any, required: Mapping[str, Kind], optional: Mapping[str, Kind] | None = None
) -> dict[str, Any]:
    """`obj` is an object with every `required` field, each `optional` one absent or typed, no
    null."""
    assert isinstance(obj, dict), obj
    for key, kind in {**required, **(optional or {})}.items():
        if key not in obj:
            assert key not in required, f"missing {key!r} in {obj}"
            continue
        value = obj[key]
        assert value is not None, f"{key!r} is null (Go omits it) in {obj}"
        if kind is int:
            assert is_int(value), f"{key!r} = {value!r} is not an integer"
        else:
            assert isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)), (
                key,
                value,
            )
    return obj


TOOL_CALL = {"trace_id": str, "policy": str, "latency_ms": int}
TOOL_CALL_OPTIONAL: dict[str, Kind] = {
    "approval_id": str,
    "error": str,
    "result": (dict, list, str),
}
TRACE = {
    "trace_id": str,
    "agent_id": str,
    "tool": str,
    "params": dict,
    "policy": str,
    "policy_rule": str,
    "status_code": int,
    "latency_ms": int,
    "timestamp": str,
}
TRACE_OPTIONAL: dict[str, Kind] = {
    "session_id": str,
    "error": str,
    "exit_code": int,
    "approval_id": str,
    "approval_status": str,
    "approved_by": str,
    "approval_ms": int,
    "supervisor_reasoning": str,
    "supervisor_confidence": NUMBER,
    "estimated_input_tokens": int,
    "estimated_output_tokens": int,
    "tokens_source": str,
}
APPROVAL = {
    "id": str,
    "agent_id": str,
    "tool": str,
    "params": dict,
    "policy_rule": str,
    "status": str,
    "created_at": str,
}
APPROVAL_OPTIONAL: dict[str, Kind] = {
    "remaining": str,
    "resolved_by": str,
    "resolved_at": str,
    "reasoning": str,
    "confidence": NUMBER,
    "injection_risk": bool,
}
GRANT = {
    "id": str,
    "agent": str,
    "tools": str,
    "expires_at": str,
    "remaining": str,
    "granted_by": str,
}


def tool_call(response: httpx.Response, status: int, policy: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = check(response.json(), TOOL_CALL, TOOL_CALL_OPTIONAL)
    assert body["policy"] == policy
    assert response.headers["x-trace-id"] == body["trace_id"]
    return body


def trace_entry(entry: dict[str, Any]) -> dict[str, Any]:
    check(entry, TRACE, TRACE_OPTIONAL)
    assert is_rfc3339(entry["timestamp"])
    return entry


def approval_item(item: dict[str, Any]) -> dict[str, Any]:
    check(item, APPROVAL, APPROVAL_OPTIONAL)
    assert is_rfc3339(item["created_at"])
    assert ("remaining" in item) == (item["status"] == "pending")
    assert GO_DURATION.match(item.get("remaining", "0s"))
    assert is_rfc3339(item.get("resolved_at", "2026-01-01T00:00:00Z"))
    return item


def traces(mesh: Mesh, **query: Any) -> list[dict[str, Any]]:
    r = mesh.http.get("/traces", params=query)
    assert r.status_code == 200 and isinstance(r.json(), list), r.text
    return [trace_entry(t) for t in r.json()]


def traced(mesh: Mesh, trace_id: str, final: bool = True) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = [
            t
            for t in traces(mesh, limit=500)
            if t["trace_id"] == trace_id and (not final or t.get("approval_status") != "pending")
        ]
        return bool(found)

    wait_until(look, 5, f"trace {trace_id} in /traces")
    return found[0]


def call(
    mesh: Mesh, tool: str, params: dict[str, Any], agent: str = "dev-1", **kw: Any
) -> httpx.Response:
    return mesh.call(tool, params, agent=agent, **kw)


def background(mesh: Mesh, tool: str, params: dict[str, Any]) -> Future[httpx.Response]:
    return ThreadPoolExecutor(1).submit(
        lambda: httpx.post(
            f"{mesh.url}/tool/{tool}",
            json={"params": params},
            timeout=30,
            headers={"Authorization": "Bearer agent:dev-1"},
        )
    )


def pending_for(mesh: Mesh, tool: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = [
            a
            for a in mesh.http.get("/approvals", params={"status": "pending"}).json()
            if a["tool"] == tool
        ]
        return bool(found)

    wait_until(look, 5, f"a pending approval for {tool}")
    return approval_item(found[0])


# -- empty stores are empty arrays -------------------------------------------------------------


def test_empty_lists_are_empty_arrays(mesh: Mesh) -> None:
    for path in ("/approvals", "/grants", "/sessions", "/sessions/no-such-session"):
        r = mesh.http.get(path)
        assert (r.status_code, r.json()) == (200, []), (path, r.text)
    assert mesh.http.get("/traces", params={"agent": "nobody"}).json() == []


# -- POST /tool/{name} -------------------------------------------------------------------------


def test_allowed_call(mesh: Mesh, demo: Path) -> None:
    body = tool_call(call(mesh, "fs.read_text_file", {"path": str(demo / "a.txt")}), 200, "allow")
    assert body["result"]["content"][0]["text"] == "alpha" and "error" not in body
    entry = traced(mesh, body["trace_id"])
    assert (entry["policy"], entry["status_code"], entry["agent_id"]) == ("allow", 200, "dev-1")
    assert entry["tokens_source"] == "estimate"
    assert entry["estimated_input_tokens"] >= 1 and entry["estimated_output_tokens"] >= 1


def test_denied_call(mesh: Mesh, demo: Path) -> None:
    body = tool_call(call(mesh, "fs.move_file", {"source": "a", "destination": "b"}), 403, "deny")
    assert body["error"] and "result" not in body
    assert traced(mesh, body["trace_id"])["status_code"] == 403


def test_unknown_tool_is_404_and_not_a_trace(mesh: Mesh) -> None:
    body = tool_call(call(mesh, "fs.no_such_tool", {}), 404, "error")
    assert "unknown tool" in body["error"]
    body = tool_call(call(mesh, "nosuch.tool", {}), 404, "error")
    assert body["trace_id"] not in {t["trace_id"] for t in traces(mesh, limit=500)}


@pytest.mark.parametrize("content", [b'{"params": ', b"not json", b'{"params": [1]}'])
def test_bad_body_is_400_with_policy_error(mesh: Mesh, content: bytes) -> None:
    r = mesh.http.post(
        "/tool/fs.read_text_file",
        content=content,
        headers={"Authorization": "Bearer agent:dev-1", "Content-Type": "application/json"},
    )
    body = tool_call(r, 400, "error")
    assert body["latency_ms"] == 0 and body["error"]


def test_trace_id_comes_from_traceparent(mesh: Mesh, demo: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = call(
        mesh,
        "fs.list_directory",
        {"path": str(demo)},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Session-Id": "go-s1"},
    )
    assert tool_call(r, 200, "allow")["trace_id"] == trace_id
    assert traced(mesh, trace_id)["session_id"] == "go-s1"


def test_rate_limited_call(mesh: Mesh, demo: Path) -> None:
    statuses = [
        call(mesh, "fs.list_directory", {"path": str(demo), "n": i}, agent="burst")
        for i in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    body = tool_call(statuses[-1], 429, "rate_limited")
    assert body["error"]


# -- human approval ----------------------------------------------------------------------------


def test_approved_call_is_traced_while_it_waits(mesh: Mesh, demo: Path) -> None:
    target = demo / "approved.txt"
    waiting = background(mesh, "fs.write_file", {"path": str(target), "content": "yes"})
    approval = pending_for(mesh, "fs.write_file")
    assert approval["status"] == "pending" and approval["agent_id"] == "dev-1"
    assert approval["params"] == {"path": str(target), "content": "yes"}
    assert "resolved_at" not in approval and "resolved_by" not in approval
    # While it waits, /traces shows the call (Go: policy human_approval, no status yet).
    found: list[dict[str, Any]] = []

    def approval_traced() -> bool:
        found.extend(t for t in traces(mesh) if t.get("approval_id") == approval["id"])
        return bool(found)

    wait_until(
        approval_traced,
        5,
        "the waiting call in /traces",
    )
    assert (found[0]["policy"], found[0]["status_code"]) == ("human_approval", 0)

    r = mesh.http.post(
        f"/approvals/{approval['id']}/approve", json={"reasoning": "fine", "confidence": 0.8}
    )
    assert r.status_code == 200 and {k: r.json()[k] for k in ("status", "id")} == {
        "status": "approved",
        "id": approval["id"],
    }
    body = tool_call(waiting.result(timeout=10), 200, "human_approval")
    assert body["approval_id"] == approval["id"] and target.read_text() == "yes"
    assert body["trace_id"] == found[0]["trace_id"]  # one trace, completed
    entry = traced(mesh, body["trace_id"])
    assert (entry["approval_status"], entry["status_code"], entry["supervisor_reasoning"]) == (
        "approved",
        200,
        "fine",
    )
    assert entry["approval_ms"] >= 0 and entry["estimated_input_tokens"] >= 1
    assert len([t for t in traces(mesh, limit=500) if t["trace_id"] == body["trace_id"]]) == 1

    resolved = approval_item(mesh.http.get(f"/approvals/{approval['id']}").json())
    assert (
        resolved["status"] == "approved"
        and resolved["reasoning"] == "fine"
        and resolved["confidence"] == 0.8
    )
    again = mesh.http.post(f"/approvals/{approval['id']}/deny", json={})
    assert again.status_code == 409 and again.json()["error"]


def test_denied_approval_is_403(mesh: Mesh, demo: Path) -> None:
    waiting = background(mesh, "fs.create_directory", {"path": str(demo / "no")})
    approval = pending_for(mesh, "fs.create_directory")
    r = mesh.http.post(f"/approvals/{approval['id'][:8]}/deny", json={"resolved_by": "alice"})
    assert (
        r.status_code == 200
        and r.json()["status"] == "denied"
        and r.json()["id"].startswith(approval["id"][:8])
    )
    body = tool_call(waiting.result(timeout=10), 403, "human_approval")
    assert body["approval_id"] == approval["id"] and "alice" in body["error"]
    assert traced(mesh, body["trace_id"])["approval_status"] == "denied"
    assert not (demo / "no").exists()


def test_approval_timeout_is_408(mesh: Mesh, demo: Path) -> None:
    r = call(mesh, "fs.write_file", {"path": str(demo / "late.txt"), "content": "x"})
    body = tool_call(r, 408, "human_approval")
    assert body["approval_id"] and body["error"]
    assert traced(mesh, body["trace_id"])["approval_status"] == "timeout"
    item = approval_item(mesh.http.get(f"/approvals/{body['approval_id']}").json())
    assert item["status"] == "timeout" and "remaining" not in item


def test_approval_lists_and_detail(mesh: Mesh, demo: Path) -> None:
    waiting = background(mesh, "fs.write_file", {"path": str(demo / "listed.txt"), "content": "x"})
    approval = pending_for(mesh, "fs.write_file")
    everything = mesh.http.get("/approvals").json()
    assert isinstance(everything, list) and {a["status"] for a in everything} >= {
        "pending",
        "approved",
    }
    for item in everything:
        approval_item(item)
    assert [
        a["id"]
        for a in mesh.http.get(
            "/approvals", params={"status": "pending", "tool": "fs.write_*"}
        ).json()
    ] == [approval["id"]]
    assert mesh.http.get("/approvals", params={"tool": "other.*"}).json() == []
    detail = approval_item(mesh.http.get(f"/approvals/{approval['id']}").json())
    assert isinstance(detail["recent_traces"], list) and isinstance(detail["active_grants"], list)
    for entry in detail["recent_traces"]:
        trace_entry(entry)
    unknown = mesh.http.get("/approvals/ffffffffffff")
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)
    assert mesh.http.post("/approvals/ffffffffffff/approve", json={}).status_code == 404
    mesh.http.post(f"/approvals/{approval['id']}/approve", json={})
    assert waiting.result(timeout=10).status_code == 200


# -- grants ------------------------------------------------------------------------------------


def test_grants(mesh: Mesh, demo: Path) -> None:
    r = mesh.http.post(
        "/grants", json={"agent": "dev-*", "tools": "fs.create_directory", "duration": "30m"}
    )
    assert r.status_code == 201, r.text
    grant = check(r.json(), GRANT)
    assert (grant["agent"], grant["tools"]) == ("dev-*", "fs.create_directory")
    assert is_rfc3339(grant["expires_at"]) and GO_DURATION.match(grant["remaining"])
    assert grant["remaining"] in ("30m0s", "29m59s")
    listed = mesh.http.get("/grants").json()
    assert [check(g, GRANT)["id"] for g in listed] == [grant["id"]]
    # The grant turns approval into allow.
    body = tool_call(
        call(mesh, "fs.create_directory", {"path": str(demo / "granted")}), 200, "allow"
    )
    assert traced(mesh, body["trace_id"])["policy_rule"] == f"grant:{grant['id']}"
    waiting = background(mesh, "fs.write_file", {"path": str(demo / "g.txt"), "content": "x"})
    detail = mesh.http.get(f"/approvals/{pending_for(mesh, 'fs.write_file')['id']}").json()
    assert [check(g, GRANT)["id"] for g in detail["active_grants"]] == [grant["id"]]
    mesh.http.post(f"/approvals/{detail['id']}/approve", json={})
    assert waiting.result(timeout=10).status_code == 200

    revoked = mesh.http.delete(f"/grants/{grant['id']}")
    assert revoked.status_code == 200 and {k: revoked.json()[k] for k in ("status", "id")} == {
        "status": "revoked",
        "id": grant["id"],
    }
    assert mesh.http.delete(f"/grants/{grant['id']}").status_code == 404
    assert mesh.http.get("/grants").json() == []
    for bad in ({"agent": "a", "tools": "x"}, {"agent": "a", "tools": "x", "duration": "soon"}, {}):
        r = mesh.http.post("/grants", json=bad)
        assert r.status_code == 400 and isinstance(r.json()["error"], str)


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
