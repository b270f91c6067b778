"""The stdio MCP front-end driven by the official SDK client, as Claude Code would: attach-or-start,
tools/list passthrough, calls through policy, progress, two sessions sharing one mesh, lifecycle."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

from bus.state_dir import running_pid
from mesh_config.file import load_config
from tests.support import alive, descendants, free_port, npm_server, text_of, wait_until
from workers.mcp_client import UpstreamClient
from workers.upstream_types import UpstreamSpec

_RAW = TypeAdapter(dict[str, Any])  # read results as sent, not through the SDK's models


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.port = free_port()
        self.config_path = tmp / "mesh.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "port": self.port,
                    "grace_seconds": 1,
                    "trace_file": "traces.jsonl",
                    "mcp_servers": [
                        {
                            "name": "everything",
                            "command": npm_server("everything"),
                            "args": ["stdio"],
                        }
                    ],
                    "policies": [
                        {
                            "name": "claude",
                            "agent": "claude",
                            "rules": [
                                {"tools": ["everything.get-env"], "action": "deny"},
                                {"tools": ["everything.*"], "action": "allow"},
                            ],
                        },
                        {
                            "name": "default",
                            "agent": "*",
                            "rules": [{"tools": ["*"], "action": "deny"}],
                        },
                    ],
                }
            )
        )
        self.env = {**os.environ, "AGENT_MESH_HOME": str(self.home)}
        self.state = self.home / load_config(self.config_path).config_hash

    def params(self, *extra: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=sys.executable,
            args=["-m", "agent_mesh", "--mcp", "--config", str(self.config_path), *extra],
            env=self.env,
            cwd=str(self.config_path.parent),
        )

    @asynccontextmanager
    async def client(self, *extra: str, **kw: Any) -> AsyncIterator[Client]:
        async with Client(self.params(*extra), mode="legacy", **kw) as client:
            yield client

    def mesh_pid(self) -> int | None:
        return running_pid(self.state)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    pid = s.mesh_pid()
    if pid is not None:  # a test failed before the lifecycle could stop it: do not leak the mesh
        tree = descendants(pid)
        os.kill(pid, 15)
        wait_until(lambda: not alive(pid), 20, "mesh stopped")
        assert not [p for p in tree if alive(p)]


async def _upstream_tools() -> dict[str, dict[str, Any]]:
    async with UpstreamClient(
        UpstreamSpec(name="e", transport="stdio", command=npm_server("everything"), args=("stdio",))
    ) as direct:
        return {t["name"]: t for t in direct.tools}


async def test_tools_calls_policy_and_progress(setup: Setup) -> None:
    direct = await _upstream_tools()
    seen: list[tuple[float, float | None]] = []
    async with setup.client("--mcp-session-id", "sess-1") as client:
        raw = client.session.send_request(types.ListToolsRequest(params=None), _RAW)  # type: ignore[type-var]
        listed = (await raw)["tools"]
        by_name = {t["name"]: t for t in listed}
        # Every upstream tool, prefixed, its schema untouched.
        for name, tool in direct.items():
            assert by_name[f"everything.{name}"]["inputSchema"] == tool["inputSchema"]
        assert {"mesh.catalog", "grant.create", "approval.pending", "approval.resolve"} <= set(
            by_name
        )

        result = await client.call_tool("everything.echo", {"message": "hello mesh"})
        assert not result.is_error
        assert text_of(result) == "Echo: hello mesh"

        denied = await client.call_tool("everything.get-env", {})
        assert denied.is_error and "denied by policy claude" in text_of(denied)

        with pytest.raises(MCPError) as unknown:
            await client.call_tool("everything.nope", {})
        assert "unknown tool everything.nope" in str(unknown.value)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total))

        long = await client.call_tool(
            "everything.trigger-long-running-operation",
            {"duration": 1, "steps": 3},
            progress_callback=on_progress,
        )
        assert not long.is_error
        assert [p for p, _ in seen] == [1, 2, 3] and seen[-1][1] == 3

        catalog = await client.call_tool("mesh.catalog", {})
        actions = {
            t["tool"]: t["action"] for t in catalog.structured_content["servers"]["everything"]
        }
        assert actions["everything.get-env"] == "deny" and actions["everything.echo"] == "allow"

        # An agent cannot grant itself tools (grants are the operator's).
        grant = await client.call_tool(
            "grant.create", {"tools": ["everything.*"], "duration": "1h"}
        )
        assert grant.is_error and "agent claude cannot grant itself tools" in text_of(grant)
        listed_grants = await client.call_tool("grant.list", {})
        assert listed_grants.structured_content["grants"] == []

        # The calls are traced with the session id, in the mesh's one trace store. Read while
        # this client is attached: the mesh stops grace_seconds (1) after the last one leaves,
        # and the connector's trace records reach the store shortly after its calls answer.
        wanted = {
            "everything.echo",
            "everything.get-env",
            "everything.trigger-long-running-operation",
        }
        deadline = asyncio.get_running_loop().time() + 10
        tools: set[str] = set()
        while not wanted <= tools and asyncio.get_running_loop().time() < deadline:
            reply = await asyncio.to_thread(
                httpx.get,
                f"http://127.0.0.1:{setup.port}/traces",
                params={"session": "sess-1"},
                timeout=5,
            )
            tools = {t["tool"] for t in reply.json()}
            if not wanted <= tools:
                await asyncio.sleep(0.05)
        assert wanted <= tools


async def test_two_sessions_share_one_mesh_that_stops_after_the_last(setup: Setup) -> None:
    async with setup.client("--mcp-session-id", "a") as first:
        mesh = setup.mesh_pid()
        assert mesh is not None
        tree = descendants(mesh)
        async with setup.client("--mcp-agent", "other", "--mcp-session-id", "b") as second:
            assert setup.mesh_pid() == mesh  # attached, no second mesh
            assert (
                text_of(await first.call_tool("everything.echo", {"message": "one"})) == "Echo: one"
            )
            other = await second.call_tool("everything.echo", {"message": "two"})
            assert other.is_error and "denied by policy default" in text_of(other)
            # Config 5: a REST agent on the same mesh at the same time, same policies and traces.
            rest = await asyncio.to_thread(
                httpx.post,
                f"http://127.0.0.1:{setup.port}/tool/everything.echo",
                timeout=10,
                json={"params": {"message": "rest"}},
                headers={"Authorization": "Bearer agent:claude", "X-Session-Id": "rest-1"},
            )
            assert (
                rest.status_code == 200
                and rest.json()["result"]["content"][0]["text"] == "Echo: rest"
            )
        # One client left: the mesh stays, past grace_seconds (1).
        await anyio.sleep(1.5)  # time passing is the case tested
        assert setup.mesh_pid() == mesh
        assert (
            text_of(await first.call_tool("everything.echo", {"message": "three"})) == "Echo: three"
        )
    wait_until(lambda: not alive(mesh), 20, "the mesh to stop after its last client left")
    wait_until(lambda: not [p for p in tree if alive(p)], 10, "no process of the mesh left")
    sessions: dict[str, Any] = {}
    for line in (setup.config_path.parent / "traces.jsonl").read_text().splitlines():
        record = yaml.safe_load(line)
        sessions.setdefault(record["session_id"], set()).add(record["agent_id"])
    assert (
        sessions["a"] == {"claude"}
        and sessions["b"] == {"other"}
        and sessions["rest-1"] == {"claude"}
    )
