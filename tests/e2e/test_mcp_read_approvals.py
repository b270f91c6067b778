"""Human approval for prompts and resource reads (issue 11): they take the tool call's governed
path, so a rule `human_approval` on `<server>.prompt:<name>` or `<server>.resource:<uri>` parks
the read until a human resolves it — approved, it is served; denied, a policy refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from bus.errors import RPC_POLICY_REFUSED
from tests.e2e.mesh import Mesh, running
from tests.support import npm_server


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = {
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]}
        ],
        "policies": [
            {
                "name": "reader",
                "agent": "reader",
                "rules": [
                    {
                        "tools": [
                            "everything.prompt:args-prompt",
                            "everything.resource:demo://resource/dynamic/text/*",
                        ],
                        "action": "human_approval",
                    },
                    {"tools": ["everything.*"], "action": "allow"},
                ],
            }
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


async def _pending(mesh: Mesh, tool: str) -> dict[str, Any]:
    for _ in range(200):
        for approval in mesh.http.get("/approvals", params={"status": "pending"}).json():
            if approval["tool"] == tool:
                return approval  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval for {tool}")


def _trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    for trace in mesh.http.get("/traces", params={"agent": "reader"}).json():
        if trace["trace_id"] == trace_id and trace.get("approval_status") != "pending":
            return trace  # type: ignore[no-any-return]
    raise AssertionError(f"no final trace {trace_id}")


async def test_a_prompt_needing_approval_is_served_once_approved(mesh: Mesh) -> None:
    async with mesh.mcp("reader") as client:
        got = asyncio.create_task(client.get_prompt("everything.args-prompt", {"city": "Paris"}))
        approval = await _pending(mesh, "everything.prompt:args-prompt")
        assert approval["params"] == {"city": "Paris"} and not got.done()
        assert mesh.http.post(f"/approvals/{approval['id']}/approve", json={}).status_code == 200
        prompt = await asyncio.wait_for(got, 10)
        assert isinstance(prompt.messages[0].content, types.TextContent)
        assert prompt.messages[0].content.text == "What's weather in Paris?"
        # Allowed reads are not held.
        assert (await client.get_prompt("everything.simple-prompt")).messages
    trace = _trace(mesh, approval["trace_id"])
    assert (trace["tool"], trace["status_code"], trace["policy"]) == (
        "everything.prompt:args-prompt",
        200,
        "human_approval",
    )
    assert (trace["approval_id"], trace["approval_status"]) == (approval["id"], "approved")


async def test_a_resource_read_denied_by_a_human_is_a_policy_refusal(mesh: Mesh) -> None:
    uri = "demo://resource/dynamic/text/3"
    async with mesh.mcp("reader") as client:
        read = asyncio.create_task(client.read_resource(uri))
        approval = await _pending(mesh, f"everything.resource:{uri}")
        assert approval["params"] == {"uri": uri}
        assert mesh.http.post(f"/approvals/{approval['id']}/deny", json={}).status_code == 200
        with pytest.raises(MCPError) as refused:
            await asyncio.wait_for(read, 10)
        assert refused.value.code == RPC_POLICY_REFUSED
        assert refused.value.message.startswith(f"approval {approval['id'][:8]} denied by ")
        assert refused.value.data["policy"] == "human_approval"
        # Approved, the same read is served.
        again = asyncio.create_task(client.read_resource(uri))
        second = await _pending(mesh, f"everything.resource:{uri}")
        assert mesh.http.post(f"/approvals/{second['id']}/approve", json={}).status_code == 200
        text = await asyncio.wait_for(again, 10)
        assert isinstance(text.contents[0], types.TextResourceContents)
        assert text.contents[0].text.startswith("Resource 3: This is a plaintext resource")
    assert _trace(mesh, approval["trace_id"])["status_code"] == 403
