"""Transparent mode (`prefix: ""`, one upstream): an MCP client sees the upstream itself — same
identity, tools, schemas, results, resources and prompts — apart from policy decisions."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

from mesh_config.file import load_config
from mesh_config.model import ConfigError
from tests.e2e.mesh import Mesh, running
from tests.support import alive, cmdline, descendants, npm_server, text_of

RAW = TypeAdapter(dict[str, Any])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = {
        "mcp_servers": [
            {
                "name": "everything",
                "prefix": "",
                "command": npm_server("everything"),
                "args": ["stdio"],
            }
        ],
        "policies": [
            {
                "name": "p",
                "agent": "*",
                "rules": [
                    {"tools": ["everything.get-env"], "action": "deny"},
                    {"tools": ["everything.*"], "action": "allow"},
                ],
            }
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


async def _no_llm(context: Any, params: Any) -> Any:
    return types.ErrorData(code=types.INVALID_REQUEST, message="no LLM here")


# The mesh's upstream session can forward sampling and elicitation, so it declares both; an
# upstream may list tools by client capabilities (server-everything does): compare like with like.
CAPABLE: dict[str, Any] = {"sampling_callback": _no_llm, "elicitation_callback": _no_llm}


@asynccontextmanager
async def direct() -> AsyncIterator[Client]:
    async with Client(
        StdioServerParameters(command=npm_server("everything"), args=["stdio"]),
        mode="legacy",
        **CAPABLE,
    ) as c:
        yield c


async def _raw(client: Client, request: Any) -> dict[str, Any]:
    return await client.session.send_request(request, RAW)  # type: ignore[type-var]


async def test_the_mesh_looks_like_the_upstream(mesh: Mesh) -> None:
    async with direct() as upstream, mesh.mcp("t", **CAPABLE) as proxied:
        assert proxied.server_info and upstream.server_info
        assert proxied.server_info.name == upstream.server_info.name
        assert proxied.server_info.version == upstream.server_info.version
        up_tools = (await _raw(upstream, types.ListToolsRequest(params=None)))["tools"]
        mesh_tools = (await _raw(proxied, types.ListToolsRequest(params=None)))["tools"]
        assert mesh_tools == up_tools  # same names, schemas untouched, no mesh tools added
        call = types.CallToolRequest(
            params=types.CallToolRequestParams(name="echo", arguments={"message": "same"})
        )
        assert await _raw(proxied, call) == await _raw(upstream, call)
        image = types.CallToolRequest(
            params=types.CallToolRequestParams(name="get-tiny-image", arguments={})
        )
        assert await _raw(proxied, image) == await _raw(upstream, image)
        for request in (
            types.ListResourcesRequest(params=None),
            types.ListPromptsRequest(params=None),
        ):
            assert await _raw(proxied, request) == await _raw(upstream, request)
        # Apart from policy decisions.
        denied = await proxied.call_tool("get-env", {})
        assert denied.is_error and "denied by policy p" in text_of(denied)


def test_clashing_prefixes_are_a_config_error(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        'mcp_servers:\n  - {name: a, command: x, prefix: ""}\n'
        '  - {name: b, command: y, prefix: ""}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "duplicate tool prefix" in str(err.value) and "mcp_servers[1]" in str(err.value)


async def test_completion_is_proxied_like_the_upstream(mesh: Mesh) -> None:
    async with direct() as upstream, mesh.mcp("t", **CAPABLE) as proxied:
        assert proxied.server_capabilities.completions is not None
        request = types.CompleteRequest(
            params=types.CompleteRequestParams(
                ref=types.PromptReference(type="ref/prompt", name="completable-prompt"),
                argument=types.CompletionArgument(name="department", value="E"),
            )
        )
        expected = await _raw(upstream, request)
        assert expected["completion"]["values"], expected  # the upstream does complete this
        assert await _raw(proxied, request) == expected
        unknown = types.CompleteRequest(
            params=types.CompleteRequestParams(
                ref=types.PromptReference(type="ref/prompt", name="no-such-prompt"),
                argument=types.CompletionArgument(name="x", value=""),
            )
        )
        with pytest.raises(MCPError) as direct_error:
            await _raw(upstream, unknown)
        with pytest.raises(MCPError) as mesh_error:  # the upstream's own error, passed through
            await _raw(proxied, unknown)
        assert mesh_error.value.error.code == direct_error.value.error.code


async def test_resource_subscription_updates_reach_the_subscriber(mesh: Mesh) -> None:
    import anyio

    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async with mesh.mcp("t", message_handler=on_message, **CAPABLE) as client:
        resources = client.server_capabilities.resources
        assert resources and resources.subscribe
        uri = str((await client.list_resources()).resources[0].uri)
        await _raw(client, types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)))
        # server-everything then sends notifications/resources/updated every 5 s for subscribed
        # URIs.
        await client.call_tool("toggle-subscriber-updates", {})
        with anyio.fail_after(12):
            while uri not in updates:
                await anyio.sleep(0.1)
        await client.call_tool("toggle-subscriber-updates", {})
        await _raw(client, types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri)))


async def test_a_subscription_survives_the_upstream_being_replaced(mesh: Mesh) -> None:
    """The upstream MCP server dies and its worker starts a new one, which knows no subscription:
    the gateway subscribes again on its own, and updates keep reaching the subscriber."""
    import anyio

    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    # Its own agent: its calls stay apart from the other test's toggle calls.
    async with mesh.mcp("t-replaced", message_handler=on_message, **CAPABLE) as client:
        uri = str((await client.list_resources()).resources[0].uri)
        await _raw(client, types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)))
        (worker,) = mesh.serving("everything")
        (server,) = [p for p in descendants(worker) if "node" in cmdline(p)][:1]
        os.kill(server, signal.SIGKILL)
        with anyio.fail_after(15):  # the worker replaces it (in-process restart)
            while alive(server) or not await _answers(client):
                await anyio.sleep(0.1)
        await client.call_tool(
            "toggle-subscriber-updates", {}
        )  # on the new server: updates every 5 s
        try:
            with anyio.fail_after(12):
                while uri not in updates:
                    await anyio.sleep(0.1)
        finally:
            await client.call_tool("toggle-subscriber-updates", {})
        await _raw(client, types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri)))


async def _answers(client: Client) -> bool:
    try:  # while the server is down the mesh has no tool of that name to offer
        result = await client.call_tool("echo", {"message": f"back? {time.monotonic()}"})
    except MCPError:
        return False
    return not result.is_error
