"""The shipped example as the README runs it (`examples/filesystem.yaml`): an agent cannot
approve its own call or grant itself tools, with MESH_OPERATOR_TOKEN unset (the self-approval
guard) and set (the operator token); a human with the `mesh` CLI can."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.mesh import Mesh
from tests.support import npm_server, text_of, wait_until

EXAMPLE = Path(__file__).parents[2] / "examples" / "filesystem.yaml"
TOKEN = "operator-token-for-tests"


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["no-token", "operator-token"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    config = yaml.safe_load(EXAMPLE.read_text())
    assert config["auth"] == {"operator_token": "${MESH_OPERATOR_TOKEN:-}"}  # expanded by the mesh
    config["mcp_servers"][0].update(command=npm_server("filesystem"), args=[str(demo)])
    m = Mesh(tmp_path_factory.mktemp("mesh"), config)
    m.env.pop("MESH_OPERATOR_TOKEN", None)
    if request.param:
        m.env["MESH_OPERATOR_TOKEN"] = request.param
    m.start()
    m.demo = demo  # type: ignore[attr-defined]
    m.token = request.param  # type: ignore[attr-defined]
    yield m
    assert m.stop() == set()


def traces(mesh: Mesh) -> list[dict[str, Any]]:
    body = mesh.http.get("/traces", params={"limit": 50}).json()
    found: list[dict[str, Any]] = body if isinstance(body, list) else body["traces"]
    return found


async def test_the_agent_cannot_approve_its_own_call(mesh: Mesh) -> None:
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    token: str | None = mesh.token  # type: ignore[attr-defined]
    target = demo / "note.txt"
    bearer = {"Authorization": "Bearer agent:claude"}
    async with mesh.mcp("claude") as client:
        first = await client.call_tool(
            "filesystem.write_file", {"path": str(target), "content": "hi"}
        )
        assert first.is_error and not target.exists()
        approval_id = first.structured_content["approval_id"]
        assert f"mesh approve {approval_id[:8]}" in text_of(first)

        # Over MCP: neither approving its own call nor granting itself tools.
        itself = await client.call_tool(
            "approval.resolve", {"id": approval_id, "decision": "approve"}
        )
        granted = await client.call_tool(
            "grant.create", {"tools": ["filesystem.*"], "duration": "1h"}
        )
        assert itself.is_error and granted.is_error
        if token:
            assert "operator token required" in text_of(itself)
            assert "operator token required" in text_of(granted)
        else:
            assert (
                f"agent claude cannot approve its own call (approval {approval_id[:8]})"
                in text_of(itself)
            )
            assert "agent claude cannot grant itself tools" in text_of(granted)
        assert (await client.call_tool("grant.list", {})).structured_content == {"grants": []}

        # Over REST with its own bearer: the same.
        r = mesh.http.post(f"/approvals/{approval_id}/approve", json={}, headers=bearer)
        g = mesh.http.post(
            "/grants", json={"agent": "claude", "tools": ["*"], "duration": "1h"}, headers=bearer
        )
        assert (r.status_code, g.status_code) == (403, 403)
        if token:
            assert r.json()["error"].startswith("operator token required")
            wrong = mesh.http.post(
                f"/approvals/{approval_id}/approve",
                json={},
                headers={"X-Operator-Token": "not-the-token"},
            )
            assert wrong.status_code == 403 and wrong.json()["error"].startswith(
                "wrong operator token"
            )
        else:
            assert (
                f"agent claude cannot approve its own call (approval {approval_id[:8]})"
                in r.json()["error"]
            )
            assert "agent claude cannot grant itself tools" in g.json()["error"]
        assert not target.exists()

        # The human approves with the mesh CLI; the agent then gets its call run, once.
        approved = mesh.cli("approve", approval_id[:8])
        assert approved.returncode == 0, approved.stderr
        replayed = await client.call_tool(
            "approval.resolve", {"id": approval_id, "decision": "approve"}
        )
        assert not replayed.is_error, replayed.content
        assert target.read_text() == "hi"

    def approved_by_human() -> bool:
        mine = [t for t in traces(mesh) if t.get("approval_id") == approval_id]
        assert all(t.get("approved_by") != "agent:claude" for t in mine), mine
        return any(t["status_code"] == 200 and t.get("approval_status") == "approved" for t in mine)

    wait_until(approved_by_human, 5, "the trace of the approved call, approved by the human")


async def test_the_agent_may_withdraw_its_own_call(mesh: Mesh) -> None:
    if mesh.token:  # type: ignore[attr-defined]
        pytest.skip("with an operator token only the operator resolves")
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    async with mesh.mcp("claude") as client:
        first = await client.call_tool("filesystem.create_directory", {"path": str(demo / "never")})
        approval_id = first.structured_content["approval_id"]
        withdrawn = await client.call_tool(
            "approval.resolve", {"id": approval_id, "decision": "deny"}
        )
        assert not withdrawn.is_error and "denied" in text_of(withdrawn)
    assert not (demo / "never").exists()


def test_check_names_an_unset_variable(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("auth:\n  operator_token: ${MESH_TEST_NOT_SET_ANYWHERE}\n")
    env = {k: v for k, v in os.environ.items() if k != "MESH_TEST_NOT_SET_ANYWHERE"}
    out = subprocess.run(
        [sys.executable, "-m", "agent_mesh", "check", "--config", str(config)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        (
            f"agent-mesh: {config}: auth.operator_token: environment variable "
            "MESH_TEST_NOT_SET_ANYWHERE is not "
            "set (export it, or write ${MESH_TEST_NOT_SET_ANYWHERE:-default} for a default) (line "
            "2)"
        )
    ]
