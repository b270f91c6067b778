"""What the MCP face (gateway/mcp_server.py) advertises follows the upstreams in the catalogue:
in-process, no bus, the official SDK client on the server object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.catalog import ServerView
from gateway.frontend import FrontEnd
from gateway.mcp_server import MeshMcp
from mesh_config.model import Config, LoadedConfig

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@pytest.mark.parametrize(
    "upstream_caps", [{"tools": {}}, {"tools": {}, "resources": {}, "prompts": {}, "logging": {}}]
)
async def test_capabilities_follow_the_upstreams(
    tmp_path: Path, upstream_caps: dict[str, Any]
) -> None:
    """The MCP face alone (in-process, no bus): what it advertises depends on the catalogue."""
    loaded = LoadedConfig(
        config=Config.model_validate({"mcp_servers": [{"name": "t", "command": "x"}]}),
        path=tmp_path / "mesh.yaml",
    )
    frontend = FrontEnd(loaded, f"ipc://{tmp_path}/nowhere.ipc")
    frontend.catalog.servers["t"] = ServerView(
        "t",
        workers=[{"slot": "t:0"}],
        tools={"a": {"name": "a", "inputSchema": {"type": "object"}}},
        server_info={"capabilities": upstream_caps},
    )
    frontend.catalog.reindex()
    server = MeshMcp(frontend, identify=lambda ctx: ("agent", "session")).build()
    async with Client(server, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed
        assert "t.a" in {t.name for t in (await client.list_tools()).tools}
        await client.send_ping()
        if "resources" in upstream_caps:
            assert (
                caps.resources is not None
                and caps.resources.list_changed
                and not caps.resources.subscribe
            )
            assert caps.prompts is not None and caps.prompts.list_changed
            assert caps.logging is not None
            return
        assert (caps.resources, caps.prompts, caps.logging) == (None, None, None)
        for call in (client.list_resources, client.list_resource_templates, client.list_prompts):
            with pytest.raises(MCPError) as absent:
                await call()
            assert absent.value.code == types.METHOD_NOT_FOUND
        with pytest.raises(MCPError) as absent:
            await client.read_resource("demo://x")
        assert absent.value.code == types.METHOD_NOT_FOUND
        assert isinstance(
            await client.set_logging_level("info"), types.EmptyResult
        )  # still accepted
