"""Approvals over MCP: non-blocking mode answers with the approval id, a human approves, and
`approval.resolve` replays the call (the agent cannot approve it itself); supervisor mode hides
the approval tools and blocks until resolved."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, text_of


def config(demo: Path, supervisor: bool) -> dict[str, Any]:
    return {
        "supervisor": {"enabled": supervisor},
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["fs.write_file", "fs.create_directory"], "action": "human_approval"},
                    {"tools": ["fs.*"], "action": "allow"},
                ],
            }
        ],
    }


@pytest.fixture(scope="module", params=[False, True], ids=["non-blocking", "supervisor"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config(demo, request.param))) as m:
        m.demo = demo  # type: ignore[attr-defined]
        m.supervisor = request.param  # type: ignore[attr-defined]
        yield m


async def test_approval_flow(mesh: Mesh) -> None:
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    target = demo / "out.txt"
    async with mesh.mcp() as client:
        names = {t.name for t in (await client.list_tools()).tools}
        if mesh.supervisor:  # type: ignore[attr-defined]
            assert "approval.resolve" not in names and "approval.pending" not in names
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("approval.resolve", {"id": "x", "decision": "approve"})
            assert "supervisor mode is active" in str(hidden.value)
            # The call blocks until a human (REST here) approves it.
            call = asyncio.create_task(
                client.call_tool("fs.write_file", {"path": str(target), "content": "ok"})
            )
            approval: dict[str, Any] = {}
            for _ in range(100):
                pending = mesh.http.get("/approvals", params={"status": "pending"}).json()
                if pending:
                    approval = pending[0]
                    break
                await asyncio.sleep(0.1)
            assert approval and not call.done() and not target.exists()
            assert (
                mesh.http.post(f"/approvals/{approval['id']}/approve", json={}).status_code == 200
            )
            result = await asyncio.wait_for(call, 10)
            assert not result.is_error and target.read_text() == "ok"
        else:
            assert {"approval.resolve", "approval.pending"} <= names
            first = await client.call_tool("fs.write_file", {"path": str(target), "content": "ok"})
            assert first.is_error and not target.exists()
            approval_id = first.structured_content["approval_id"]
            assert approval_id[:8] in text_of(first) and "approval.resolve" in text_of(first)
            pending = await client.call_tool("approval.pending", {})
            assert [a["id"] for a in pending.structured_content["approvals"]] == [approval_id]
            # Another agent cannot resolve it, nor can the agent approve its own call.
            async with mesh.mcp("intruder") as other:
                refused = await other.call_tool(
                    "approval.resolve", {"id": approval_id, "decision": "approve"}
                )
                assert refused.is_error and "another agent" in text_of(refused)
            itself = await client.call_tool(
                "approval.resolve", {"id": approval_id, "decision": "approve"}
            )
            assert itself.is_error and "cannot approve its own call" in text_of(itself)
            assert not target.exists()
            # A human approves; the agent's approval.resolve then runs the call and returns its
            # result.
            assert mesh.http.post(f"/approvals/{approval_id}/approve", json={}).status_code == 200
            replayed = await client.call_tool(
                "approval.resolve", {"id": approval_id[:8], "decision": "approve"}
            )
            assert not replayed.is_error, replayed.content
            assert target.read_text() == "ok"
            again = await client.call_tool(
                "approval.resolve", {"id": approval_id, "decision": "approve"}
            )
            assert again.is_error and "already replayed" in text_of(again)
            # Deny (the agent withdraws its own request): nothing runs.
            second = await client.call_tool("fs.create_directory", {"path": str(demo / "never")})
            denied = await client.call_tool(
                "approval.resolve",
                {"id": second.structured_content["approval_id"], "decision": "deny"},
            )
            assert not denied.is_error and "denied" in text_of(denied)
            assert not (demo / "never").exists()
