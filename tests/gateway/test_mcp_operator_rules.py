"""The mesh's own MCP tools follow the operator routes' rule (gateway/operators.py): with
`auth.operator_token` an agent — which cannot present the token over MCP — revokes no grant and
resolves no approval; without one it may revoke and withdraw its own call, never approve it nor
grant. No MCP tool thaws a freeze or accepts a changed tool. The MCP face (gateway/mcp_server.py,
behind both /mcp and the stdio front-end) with the official SDK client, on the real approval
service (its own SQLite store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from bus.approval_messages import ApprovalSubmit, GrantCreate
from gateway.frontend import FrontEnd
from gateway.mcp_server import MeshMcp
from mesh_config.model import Config, LoadedConfig
from tests.gateway.fakes import Governed, GovernedBus

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@asynccontextmanager
async def mcp_face(tmp_path: Path, token: str | None) -> AsyncIterator[tuple[Client, Governed]]:
    config = {"auth": {"operator_token": token}} if token else {}
    loaded = LoadedConfig(config=Config.model_validate(config), path=tmp_path / "mesh.yaml")
    frontend = FrontEnd(loaded, f"ipc://{tmp_path}/nowhere.ipc")
    mesh = Governed(tmp_path)
    frontend.client = GovernedBus(mesh.approvals)
    server = MeshMcp(frontend, identify=lambda ctx: ("claude", "session")).build()
    async with Client(server, mode="legacy") as client:
        yield client, mesh


async def call(client: Client, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    result = await client.call_tool(name, arguments)
    return result.is_error, " ".join(getattr(c, "text", "") for c in result.content)


async def setup(mesh: Governed) -> tuple[str, str]:
    """A grant of the calling agent and a call of it waiting for approval."""
    grant = await mesh.approvals.op_grant_create(
        GrantCreate(agent="claude", tools=["fs.*"], duration="1h", created_by="ops")
    )
    pending = await mesh.approvals.op_submit(ApprovalSubmit(agent="claude", tool="other.write"))
    return grant["id"], pending["id"]


async def test_with_an_operator_token_no_operator_action_over_mcp(tmp_path: Path) -> None:
    async with mcp_face(tmp_path, "operator-s3cret") as (client, mesh):
        grant_id, approval_id = await setup(mesh)
        names = {t.name for t in (await client.list_tools()).tools}
        assert {n for n in names if not n.startswith("fs.")} == {
            "mesh.catalog",
            "grant.create",
            "grant.list",
            "grant.revoke",
            "approval.pending",
            "approval.resolve",
        }  # nothing that thaws, accepts a tool change or reloads
        attempts: list[tuple[str, dict[str, Any]]] = [
            ("grant.revoke", {"id": grant_id}),
            ("grant.create", {"tools": ["fs.*"], "duration": "1h"}),
            ("approval.resolve", {"id": approval_id, "decision": "deny"}),
            ("approval.resolve", {"id": approval_id, "decision": "approve"}),
        ]
        for name, arguments in attempts:
            error, text = await call(client, name, arguments)
            assert error and "operator token required" in text, (name, text)
        assert [g["id"] for g in mesh.approvals.store.grants_active(0)] == [grant_id]
        assert mesh.approvals.store.get(approval_id)["status"] == "pending"


async def test_without_a_token_an_agent_revokes_and_withdraws_but_never_approves(
    tmp_path: Path,
) -> None:
    async with mcp_face(tmp_path, None) as (client, mesh):
        grant_id, approval_id = await setup(mesh)
        error, text = await call(
            client, "approval.resolve", {"id": approval_id, "decision": "approve"}
        )
        assert error and "cannot approve its own call" in text, text
        error, text = await call(client, "grant.create", {"tools": ["fs.*"], "duration": "1h"})
        assert error and "cannot grant itself tools" in text, text
        assert await call(client, "grant.revoke", {"id": grant_id}) == (
            False,
            f"grant {grant_id[:8]} revoked",
        )  # as DELETE /grants/{id}: revoking takes power away, any caller may
        error, text = await call(
            client, "approval.resolve", {"id": approval_id, "decision": "deny"}
        )
        assert not error and "denied" in text, text
        assert mesh.approvals.store.get(approval_id)["resolved_by"] == "agent:claude"
