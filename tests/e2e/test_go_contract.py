"""The HTTP API answers in the Go agent-mesh's shapes, route by route, against a running mesh.

Written from the Go project's `proxy/handler.go` and the types it encodes (`ToolCallResponse`,
`trace.Entry`, `trace.SessionSummary`, `approvalView`, `grantView`, `registry.Tool`,
`mcp.ServerStatus`): a client written for the Go binary must run unchanged. So: lists are bare
arrays (`[]` when empty), numbers Go holds as int64 are JSON integers, times are RFC 3339
strings, optional fields are absent rather than `null`. Our extra fields may ride along; they
are not checked here. The catalogue, traces, sessions and health: test_go_contract_reads.py (the
same mesh; the shapes: tests/e2e/go_contract.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.go_contract import (
    GO_DURATION,
    GRANT,
    approval_item,
    background,
    call,
    check,
    is_rfc3339,
    pending_for,
    tool_call,
    trace_entry,
    traced,
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
