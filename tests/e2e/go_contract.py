"""The Go contract tests' mesh (tests/e2e/test_go_contract*.py share one: the
`go_contract_mesh` fixture) and the shapes the Go agent-mesh encodes, checked field by field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.mesh import Mesh
from tests.support import npm_server, wait_until

APPROVAL_TIMEOUT = 3
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+s$")  # time.Duration.String() of whole seconds


def go_contract_mesh(tmp: Path) -> Mesh:
    """Not started; its filesystem server serves `tmp/demo` (a.txt: "alpha")."""
    demo = tmp / "demo"
    demo.mkdir()
    (demo / "a.txt").write_text("alpha")
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
    return Mesh(tmp, config)


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
