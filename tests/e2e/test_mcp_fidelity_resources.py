"""MCP fidelity through the mesh (compat.md §4): resources and prompts under policy, and
`resources/list_changed` from the upstream, with the official SDK client over /mcp (the mesh of
test_mcp_fidelity.py: tests/e2e/fidelity.py).
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.fidelity import http_client, traces, until
from tests.e2e.mesh import Mesh

pytestmark = [
    pytest.mark.timeout(60),
    # logging/setLevel is deprecated at 2026-07-28; the handshake-era clients we serve still send
    # it.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


@pytest.fixture(scope="module")
def mesh(fidelity_mesh: Mesh) -> Mesh:
    return fidelity_mesh


# -- resources and prompts ----------------------------------------------------------------------


async def test_resources_under_policy(mesh: Mesh) -> None:
    async with http_client(mesh) as client:
        resources = (await client.list_resources(cache_mode="bypass")).resources
        static = [
            str(r.uri)
            for r in resources
            if str(r.uri).startswith("demo://resource/static/document/")
        ]
        assert "demo://resource/static/document/features.md" in static
        templates = {
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        }
        assert templates == {
            "demo://resource/dynamic/text/{resourceId}",
            "demo://resource/dynamic/blob/{resourceId}",
        }

        # Routed by template (never listed), allowed by `everything.*`.
        text = await client.read_resource("demo://resource/dynamic/text/7")
        assert isinstance(text.contents[0], types.TextResourceContents)
        assert text.contents[0].text.startswith("Resource 7: This is a plaintext resource")
        blob = await client.read_resource("demo://resource/dynamic/blob/8")
        assert isinstance(blob.contents[0], types.BlobResourceContents) and blob.contents[0].blob

        # Denied by the rule on `everything.resource:demo://resource/static/*`.
        with pytest.raises(MCPError) as denied:
            await client.read_resource("demo://resource/static/document/features.md")
        assert denied.value.code == -32003
        assert denied.value.message.startswith("denied by policy reader: ")
        assert (
            "everything.resource:demo://resource/static/document/features.md"
            in denied.value.message
        )
        assert denied.value.data["rule"] == "reader" and denied.value.data["policy"] == "deny"

        # An unknown URI goes to the only upstream with resources, whose error passes through.
        with pytest.raises(MCPError) as unknown:
            await client.read_resource("demo://resource/nope")
        assert unknown.value.code == types.INVALID_PARAMS
        assert "Resource demo://resource/nope not found" in unknown.value.message

    def traced() -> dict[str, dict[str, Any]]:
        return {t["tool"]: t for t in traces(mesh, agent="reader", tool="everything.resource:*")}

    expected = {
        f"everything.resource:demo://resource/{path}"
        for path in ("dynamic/text/7", "dynamic/blob/8", "static/document/features.md", "nope")
    }
    await until(lambda: expected <= traced().keys(), 5, "resource reads traced")
    by_tool = traced()
    assert by_tool["everything.resource:demo://resource/dynamic/text/7"]["status_code"] == 200
    denied_trace = by_tool["everything.resource:demo://resource/static/document/features.md"]
    assert (denied_trace["status_code"], denied_trace["policy"], denied_trace["policy_rule"]) == (
        403,
        "deny",
        "reader",
    )
    assert denied_trace["params"] == {"uri": "demo://resource/static/document/features.md"}
    assert by_tool["everything.resource:demo://resource/nope"]["status_code"] == 400


async def test_prompts_under_policy(mesh: Mesh) -> None:
    async with http_client(mesh) as client:
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert {
            "everything.simple-prompt",
            "everything.args-prompt",
            "everything.completable-prompt",
        } <= set(names)
        assert all(name.startswith("everything.") for name in names)  # dyn has no prompts

        got = await client.get_prompt("everything.args-prompt", {"city": "Paris"})
        assert isinstance(got.messages[0].content, types.TextContent)
        assert got.messages[0].content.text == "What's weather in Paris?"

        with pytest.raises(MCPError) as denied:
            await client.get_prompt("everything.completable-prompt", {"department": "Engineering"})
        assert denied.value.code == -32003 and "denied by policy reader" in denied.value.message

        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("everything.nope")
        assert (
            unknown.value.code == types.INVALID_PARAMS
            and "Prompt nope not found" in unknown.value.message
        )
        with pytest.raises(MCPError) as no_server:
            await client.get_prompt("nosuch.prompt")
        assert (
            "unknown prompt nosuch.prompt: no upstream server named 'nosuch'"
            in no_server.value.message
        )
        with pytest.raises(MCPError) as no_prompts:
            await client.get_prompt("dyn.anything")
        assert "dyn has no prompts" in no_prompts.value.message

    async with http_client(mesh, agent="stranger") as client:  # default deny covers prompts too
        with pytest.raises(MCPError) as default:
            await client.get_prompt("everything.simple-prompt")
        assert default.value.message.startswith("denied by policy default")

    await until(lambda: traces(mesh, tool="everything.prompt:args-prompt"), 5, "prompt traced")
    trace = traces(mesh, tool="everything.prompt:args-prompt")[0]
    assert (trace["agent_id"], trace["status_code"], trace["params"]) == (
        "reader",
        200,
        {"city": "Paris"},
    )
