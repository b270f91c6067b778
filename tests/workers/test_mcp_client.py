"""Real-upstream tests for workers.mcp_client (no mocks).

The upstreams are the npm reference servers pinned in package.json, run with
`node` straight from node_modules/.bin (deterministic, no npm wrapper, ~0.5 s to
start); one test goes through `npx` on purpose, to cover a launcher dying while
its child keeps the pipes. `npm ci` in the repo root installs them (scripts/test does).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.support import REPO, npm_server
from workers import mcp_client
from workers.mcp_client import UpstreamClient
from workers.upstream_types import (
    UpstreamClosed,
    UpstreamError,
    UpstreamException,
    UpstreamGone,
    UpstreamSpec,
    UpstreamTimeout,
)

ROOT = REPO
EVERYTHING = npm_server("everything")
FILESYSTEM = npm_server("filesystem")
# A missing node is an install problem (.ci/run installs it): the module fails, never skips.
NODE = shutil.which("node") or pytest.fail("node not found: install nodejs (.ci/run does)")

LONG_OP = "trigger-long-running-operation"


def everything_spec(
    *, command: str | None = None, args: tuple[str, ...] | None = None
) -> UpstreamSpec:
    return UpstreamSpec(
        name="everything",
        transport="stdio",
        command=command or str(NODE),
        args=args if args is not None else (str(EVERYTHING), "stdio"),
        cwd=str(ROOT),
    )


@pytest.fixture
async def everything() -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient(everything_spec()) as client:
        yield client


async def mid_call(
    client: UpstreamClient, duration: float = 10, **options: Any
) -> asyncio.Task[dict[str, Any]]:
    """A long call the server is running (its first progress, after a tenth of `duration`, has
    arrived): the moment to kill or cancel it."""
    running = asyncio.Event()

    async def progressed(params: dict[str, Any]) -> None:
        running.set()

    call = asyncio.create_task(
        client.call_tool(
            LONG_OP, {"duration": duration, "steps": 10}, 30, on_progress=progressed, **options
        )
    )
    await asyncio.wait_for(running.wait(), 10)
    return call


def assert_no_none(value: Any) -> None:
    """The wire never carries null-valued keys the server didn't send."""
    if isinstance(value, dict):
        for v in value.values():
            assert v is not None
            assert_no_none(v)
    elif isinstance(value, list):
        for v in value:
            assert_no_none(v)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


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
async def test_timeout_cancels_upstream_and_session_survives(tmp_path: Path) -> None:
    # `tee` records everything we write to the server, to see the cancellation.
    wire = tmp_path / "to-server.jsonl"
    spec = everything_spec(
        command="sh",
        args=("-c", 'tee "$0" | exec "$1" "$2" stdio', str(wire), str(NODE), str(EVERYTHING)),
    )
    async with UpstreamClient(spec) as client:
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await client.call_tool(LONG_OP, {"duration": 1, "steps": 2}, timeout=0.3)
        assert time.monotonic() - t0 < 1.5
        ok = await client.call_tool("echo", {"message": "after"}, timeout=5)
        assert ok["content"][0]["text"] == "Echo: after"
        assert not client.closed.is_set()

    sent = [json.loads(line) for line in wire.read_text().splitlines()]
    call_id = next(
        m["id"] for m in sent if m.get("method") == "tools/call" and m["params"]["name"] == LONG_OP
    )
    cancels = [m for m in sent if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [call_id]
    assert cancels[0]["params"]["reason"] == "timed out after 0.3s"


@pytest.mark.timeout(15)
async def test_sigkill_mid_call(everything: UpstreamClient) -> None:
    call = await mid_call(everything)
    assert everything.pid is not None
    t0 = time.monotonic()
    os.kill(everything.pid, signal.SIGKILL)
    with pytest.raises(UpstreamGone):
        await asyncio.wait_for(call, 5)
    assert time.monotonic() - t0 < 1  # noticed at once (process_exited), not by polling
    assert everything.closed.is_set()
    # A call after the close is never sent: its own error (the worker answers 503, not 502),
    # naming why the server went away.
    with pytest.raises(
        UpstreamClosed, match=r"^its connection is closed: (killed by SIGKILL|stdout closed)"
    ):
        await everything.call_tool("echo", {"message": "x"}, timeout=5)


@pytest.mark.timeout(20)
async def test_npx_launcher_killed_mid_call() -> None:
    # npx -> sh -> node: killing npx leaves node alive holding our pipes, so
    # stdout never hits EOF; the client must notice the child itself.
    assert shutil.which("npx"), "npx not on PATH: install npm (.ci/run does)"
    spec = everything_spec(
        command="npx", args=("-y", "@modelcontextprotocol/server-everything", "stdio")
    )
    async with UpstreamClient(spec) as client:
        assert any(t["name"] == "echo" for t in client.tools)
        pid = client.pid
        assert pid is not None
        call = await mid_call(client)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UpstreamGone):
            await asyncio.wait_for(call, 5)
        assert time.monotonic() - t0 < 3
        await asyncio.wait_for(client.closed.wait(), 1)
    deadline = time.monotonic() + 3
    while group_alive(pid) and time.monotonic() < deadline:  # the orphaned node is reaped too
        await asyncio.sleep(0.05)
    assert not group_alive(pid)


@pytest.mark.timeout(15)
async def test_start_failures() -> None:
    with pytest.raises(UpstreamGone):
        await UpstreamClient(everything_spec(command="/nonexistent/mcp-server")).start()
    t0 = time.monotonic()
    client = UpstreamClient(everything_spec(args=("-e", "process.exit(3)")))
    with pytest.raises(UpstreamGone):
        await client.start()
    assert time.monotonic() - t0 < 3
    assert client.closed.is_set()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("mode", "path", "transport"),
    [
        ("streamableHttp", "/mcp", "streamable_http"),
        ("streamableHttp", "/mcp", "http"),
        ("sse", "/sse", "sse"),
    ],
)
async def test_http_transports(mode: str, path: str, transport: str) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        str(NODE), str(EVERYTHING), mode,
        env={**os.environ, "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        spec = UpstreamSpec(
            name="ev-http", transport=transport, url=f"http://127.0.0.1:{port}{path}",
            headers={"X-Agent-Mesh": "test"},
        )  # fmt: skip
        async with UpstreamClient(spec) as client:
            assert "echo" in {t["name"] for t in client.tools}
            result = await client.call_tool("echo", {"message": "over http"}, timeout=5)
            assert result == {"content": [{"type": "text", "text": "Echo: over http"}]}
            seen: list[float] = []

            async def on_progress(params: dict[str, Any]) -> None:
                seen.append(params["progress"])

            await client.call_tool(LONG_OP, {"duration": 0.3, "steps": 3}, 5, on_progress)
            assert seen == [1, 2, 3]
    finally:
        server.kill()
        await server.wait()


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


@pytest.mark.timeout(15)
async def test_cancelling_the_caller_cancels_upstream(tmp_path: Path) -> None:
    wire = tmp_path / "to-server.jsonl"
    spec = everything_spec(
        command="sh",
        args=("-c", 'tee "$0" | exec "$1" "$2" stdio', str(wire), str(NODE), str(EVERYTHING)),
    )
    async with UpstreamClient(spec) as client:
        call = await mid_call(client, 2)
        call.cancel()  # what the upstream worker does on a bus CANCEL
        with pytest.raises(asyncio.CancelledError):
            await call
        ok = await client.call_tool("echo", {"message": "after"}, timeout=5)
        assert ok["content"][0]["text"] == "Echo: after"

    sent = [json.loads(line) for line in wire.read_text().splitlines()]
    call_id = next(
        m["id"] for m in sent if m.get("method") == "tools/call" and m["params"]["name"] == LONG_OP
    )
    cancels = [m for m in sent if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [call_id]


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


FAKE_SERVER = r"""
import json, sys

mode = sys.argv[1]
waiting = {}  # id of our request to the client -> id of the tools/call that made it


def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    if method is None:  # the client's answer to our request: the tool's result
        send({"id": waiting.pop(rid), "result": {"content": [], "structuredContent": message}})
    elif method == "initialize":
        if mode == "silent":
            continue
        if mode == "refuse":
            send({"id": rid, "error": {"code": -32602, "message": "no thanks"}})
            continue
        version = "1999-01-01" if mode == "ancient" else message["params"]["protocolVersion"]
        send({"id": rid, "result": {"protocolVersion": version, "capabilities": {"tools": {}},
                                    "serverInfo": {"name": "fake", "version": "1"}}})
    elif method == "tools/list":
        send({"id": rid, "result": {"tools": [{"name": "ask", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":  # noise the client must survive, then ask the client
        sys.stdout.write("this is not JSON\n\n")
        send({"id": 12345, "result": {"to": "a request never made"}})
        waiting["q%s" % rid] = rid
        asked = message["params"]["arguments"]["method"]
        send({"id": "q%s" % rid, "method": asked, "params": {"n": 1}})
"""


def fake_spec(tmp_path: Path, mode: str = "ok") -> UpstreamSpec:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return UpstreamSpec(
        name="fake", transport="stdio", command=sys.executable, args=(str(script), mode)
    )


@pytest.mark.timeout(15)
async def test_server_to_client_requests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with UpstreamClient(fake_spec(tmp_path)) as client:
        assert client.server_info == {
            "protocolVersion": mcp_client.PROTOCOL_VERSION, "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake", "version": "1"},
        }  # fmt: skip
        ping = await client.call_tool("ask", {"method": "ping"}, 5)
        assert ping["structuredContent"]["result"] == {}
        roots = await client.call_tool("ask", {"method": "roots/list"}, 5)
        assert roots["structuredContent"]["error"]["code"] == -32601
        unasked = await client.call_tool("ask", {"method": "sampling/createMessage"}, 5)
        assert unasked["structuredContent"]["error"] == {
            "code": -32600, "message": "sampling/createMessage is not supported here"
        }  # fmt: skip

        async def on_ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
            if method == "elicitation/create":
                return {"error": {"code": -1, "message": "declined"}}
            return {"result": {"asked": method, "with": params}}

        client.on_ask = on_ask
        sampled = await client.call_tool("ask", {"method": "sampling/createMessage"}, 5)
        assert sampled["structuredContent"]["result"] == {
            "asked": "sampling/createMessage", "with": {"n": 1}
        }  # fmt: skip
        declined = await client.call_tool("ask", {"method": "elicitation/create"}, 5)
        assert declined["structuredContent"]["error"] == {"code": -1, "message": "declined"}
    assert "unparseable line: b'this is not JSON'" in caplog.text


@pytest.mark.timeout(15)
@pytest.mark.parametrize(
    ("mode", "error"),
    [("ancient", UpstreamGone), ("refuse", UpstreamError), ("silent", UpstreamTimeout)],
)
async def test_handshake_failures(
    tmp_path: Path, mode: str, error: type[UpstreamException]
) -> None:
    client = UpstreamClient(fake_spec(tmp_path, mode), connect_timeout=0.5)
    with pytest.raises(error) as failed:
        await client.start()
    assert client.closed.is_set()
    if mode == "ancient":
        assert "unsupported protocol version '1999-01-01'" in str(failed.value)


@pytest.mark.timeout(20)
def test_on_uvloop_with_a_wrapper_holding_the_pipes() -> None:
    # The workers' event loop. sh stays the group leader and node, its child, holds the pipes:
    # killing sh must be noticed all the same, and node must go with the group.
    spec = everything_spec(
        command="sh", args=("-c", '"$0" "$1" stdio; :', str(NODE), str(EVERYTHING))
    )

    async def main() -> int:
        async with UpstreamClient(spec) as client:
            big = "é" * (1 << 20)
            echoed = await client.call_tool("echo", {"message": big}, timeout=10)
            assert echoed["content"][0]["text"] == "Echo: " + big
            call = await mid_call(client)
            assert client.pid is not None
            t0 = time.monotonic()
            os.kill(client.pid, signal.SIGKILL)
            with pytest.raises(UpstreamGone):
                await asyncio.wait_for(call, 5)
            assert time.monotonic() - t0 < 1
            assert client.closed.is_set()
            return client.pid

    pid = uvloop.run(main())
    deadline = time.monotonic() + 3
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(pid)
