"""workers.mcp_client against real upstreams (no mocks): the npm reference servers
(tests/workers/upstreams.py) — tools, content, errors, progress, logs, resources and prompts,
list changes, large messages. Failures: test_mcp_client_failures.py; a scripted server:
test_mcp_client_scripted.py; HTTP transports: test_mcp_http_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workers.upstreams import (
    FILESYSTEM,
    LONG_OP,
    NODE,
    everything_spec,
    mid_call,
)
from workers import mcp_client
from workers.mcp_client import UpstreamClient
from workers.upstream_types import (
    UpstreamError,
    UpstreamSpec,
)


def assert_no_none(value: Any) -> None:
    """The wire never carries null-valued keys the server didn't send."""
    if isinstance(value, dict):
        for v in value.values():
            assert v is not None
            assert_no_none(v)
    elif isinstance(value, list):
        for v in value:
            assert_no_none(v)


@pytest.mark.timeout(15)
async def test_tools_and_server_info(everything: UpstreamClient) -> None:
    tools = {t["name"]: t for t in everything.tools}
    assert {"echo", "get-structured-content", "get-tiny-image", LONG_OP} <= tools.keys()
    echo = tools["echo"]
    assert echo["description"] == "Echoes back the input string"
    assert echo["inputSchema"]["type"] == "object"
    assert echo["inputSchema"]["properties"]["message"]["type"] == "string"
    assert echo["inputSchema"]["required"] == ["message"]
    assert echo["annotations"]["readOnlyHint"] is True
    assert "outputSchema" in tools["get-structured-content"]  # camelCase, as sent
    assert_no_none(everything.tools)

    info = everything.server_info
    assert info["serverInfo"]["name"] == "mcp-servers/everything"
    assert "tools" in info["capabilities"]
    assert isinstance(info["protocolVersion"], str)
    assert_no_none(info)

    assert await everything.refresh_tools() == everything.tools


@pytest.mark.timeout(15)
async def test_echo_exact_and_stderr_passthrough(capfd: pytest.CaptureFixture[str]) -> None:
    async with UpstreamClient(everything_spec()) as client:
        result = await client.call_tool("echo", {"message": "héllo wörld ✓"}, timeout=5)
    # Exactly what the server sent: no isError/structuredContent/resultType added.
    assert result == {"content": [{"type": "text", "text": "Echo: héllo wörld ✓"}]}
    # The server's stderr reaches our fd 2 (inherited, never piped).
    assert "Starting default (STDIO) server" in capfd.readouterr().err


@pytest.mark.timeout(15)
async def test_structured_content_and_image(everything: UpstreamClient) -> None:
    result = await everything.call_tool(
        "get-structured-content", {"location": "Chicago"}, timeout=5
    )
    weather = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
    assert result["structuredContent"] == weather
    assert json.loads(result["content"][0]["text"]) == weather
    assert "isError" not in result

    image = await everything.call_tool("get-tiny-image", {}, timeout=5)
    assert [block["type"] for block in image["content"]] == ["text", "image", "text"]
    block = image["content"][1]
    assert block["mimeType"] == "image/png"
    assert base64.b64decode(block["data"]).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.timeout(15)
async def test_errors(everything: UpstreamClient) -> None:
    # The TS SDK reports an unknown tool (and bad arguments) as an isError result...
    unknown = await everything.call_tool("no-such-tool", {}, timeout=5)
    assert unknown["isError"] is True
    assert "Tool no-such-tool not found" in unknown["content"][0]["text"]
    invalid = await everything.call_tool("echo", {}, timeout=5)
    assert invalid["isError"] is True
    # ...while a request it can't even parse is a JSON-RPC error: UpstreamError.
    with pytest.raises(UpstreamError) as err:
        await everything.call_tool("echo", ["not", "an", "object"], timeout=5)  # type: ignore[arg-type]
    assert err.value.code == -32603  # what this server sends (InternalError), passed through
    assert "expected record" in err.value.message
    # The session is unaffected.
    ok = await everything.call_tool("echo", {"message": "still here"}, timeout=5)
    assert ok["content"][0]["text"] == "Echo: still here"


@pytest.mark.timeout(15)
async def test_200_concurrent_calls(everything: UpstreamClient) -> None:
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(everything.call_tool("echo", {"message": f"m{i}"}, timeout=10) for i in range(200))
    )
    assert [r["content"][0]["text"] for r in results] == [f"Echo: m{i}" for i in range(200)]
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(15)
async def test_progress_arrives_before_result(everything: UpstreamClient) -> None:
    seen: list[dict[str, Any]] = []

    async def on_progress(params: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)  # a slow consumer must still finish before the result
        seen.append(params)

    result = await everything.call_tool(
        LONG_OP, {"duration": 0.8, "steps": 4}, timeout=10, on_progress=on_progress
    )
    assert [p["progress"] for p in seen] == [1, 2, 3, 4]  # all of them, in order, already
    assert {p["total"] for p in seen} == {4}
    assert len({p["progressToken"] for p in seen}) == 1
    assert "Long running operation completed" in result["content"][0]["text"]


@pytest.mark.timeout(15)
async def test_filesystem_list_directory(tmp_path: Path) -> None:
    (tmp_path / "alpha.txt").write_text("a")
    (tmp_path / "beta.md").write_text("b")
    (tmp_path / "sub").mkdir()
    spec = UpstreamSpec(
        name="fs", transport="stdio", command=str(NODE), args=(str(FILESYSTEM), str(tmp_path))
    )
    async with UpstreamClient(spec) as fs:
        assert "list_directory" in {t["name"] for t in fs.tools}
        result = await fs.call_tool("list_directory", {"path": str(tmp_path)}, timeout=5)
    text = result["content"][0]["text"]
    assert set(text.splitlines()) == {"[FILE] alpha.txt", "[FILE] beta.md", "[DIR] sub"}
    assert result["structuredContent"] == {"content": text}


LOG_LEVELS = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}


@pytest.mark.timeout(15)
async def test_log_messages_go_to_every_call_in_flight(everything: UpstreamClient) -> None:
    # The SDK does not relate a log message to a request: each one goes to every call in flight
    # that passed on_log, before that call returns; calls that did not ask get none.
    long_logs: list[dict[str, Any]] = []
    toggle_logs: list[dict[str, Any]] = []

    async def on_long_log(params: dict[str, Any]) -> None:
        long_logs.append(params)

    async def on_toggle_log(params: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)  # a slow consumer still gets it before the result
        toggle_logs.append(params)

    long = await mid_call(everything, 1.0, on_log=on_long_log)  # in flight for 0.9 s more
    # server-everything's simulated logging sends one message at once, then one every 5 s.
    started = await everything.call_tool("toggle-simulated-logging", {}, 5, on_log=on_toggle_log)
    assert "Started simulated" in started["content"][0]["text"]
    assert len(toggle_logs) == 1
    assert toggle_logs[0]["level"] in LOG_LEVELS and "level" in toggle_logs[0]["data"]
    await long
    assert long_logs == toggle_logs  # the same message, raw
    stopped = await everything.call_tool("toggle-simulated-logging", {}, 5)
    assert "Stopped simulated" in stopped["content"][0]["text"]


@pytest.mark.timeout(15)
async def test_request_passes_resources_and_prompts_through(everything: UpstreamClient) -> None:
    read = await everything.request("resources/read", {"uri": "demo://resource/dynamic/text/3"}, 5)
    assert read["contents"][0]["uri"] == "demo://resource/dynamic/text/3"
    assert read["contents"][0]["text"].startswith("Resource 3: This is a plaintext resource")
    listed = await everything.request("prompts/list", None, 5)
    assert "args-prompt" in {p["name"] for p in listed["prompts"]}
    prompt = await everything.request(
        "prompts/get", {"name": "args-prompt", "arguments": {"city": "Oslo"}}, 5
    )
    assert prompt == {
        "messages": [
            {"role": "user", "content": {"type": "text", "text": "What's weather in Oslo?"}}
        ]
    }
    with pytest.raises(UpstreamError) as unknown:
        await everything.request("prompts/get", {"name": "nope"}, 5)
    assert (unknown.value.code, unknown.value.message) == (
        -32602,
        "MCP error -32602: Prompt nope not found",
    )
    with pytest.raises(UpstreamError) as missing:
        await everything.request("resources/read", {"uri": "demo://nope"}, 5)
    assert (
        missing.value.code == -32602 and "Resource demo://nope not found" in missing.value.message
    )


@pytest.mark.timeout(15)
async def test_list_changed_notifications_are_noticed(everything: UpstreamClient) -> None:
    everything.list_changed.clear()
    everything.tools_changed.clear()
    assert everything.list_changes == {"resources": 0, "prompts": 0}
    # Registering a session resource makes server-everything send resources/list_changed.
    await everything.call_tool("gzip-file-as-resource", {"name": "t.gz", "data": "data:,x"}, 5)
    await asyncio.wait_for(everything.list_changed.wait(), 2)
    assert everything.list_changes == {"resources": 1, "prompts": 0}
    assert not everything.tools_changed.is_set()


@pytest.mark.timeout(30)
async def test_large_messages_round_trip(everything: UpstreamClient) -> None:
    big = "x" * (3 << 20) + "héllo ✓"  # several MB each way, one line each
    result = await everything.call_tool("echo", {"message": big}, timeout=20)
    assert result == {"content": [{"type": "text", "text": "Echo: " + big}]}
    ok = await everything.call_tool("echo", {"message": "small"}, timeout=5)
    assert ok["content"][0]["text"] == "Echo: small"


def test_protocol_constants_match_the_sdk() -> None:
    # Hard-coded so the stdio path needs no SDK import; an SDK bump must be looked at.
    import anyio
    from mcp import ClientSession
    from mcp_types import version

    assert mcp_client.PROTOCOL_VERSION == version.LATEST_HANDSHAKE_VERSION
    assert mcp_client.PROTOCOL_VERSIONS == version.HANDSHAKE_PROTOCOL_VERSIONS

    async def answer(context: Any, params: Any) -> Any:
        raise AssertionError("never called")

    send, receive = anyio.create_memory_object_stream[Any](0)
    with send, receive:
        session = ClientSession(
            receive, send, sampling_callback=answer, elicitation_callback=answer
        )
        capabilities = session._build_capabilities(version.LATEST_HANDSHAKE_VERSION)
    assert mcp_client.CLIENT_CAPABILITIES == capabilities.model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
