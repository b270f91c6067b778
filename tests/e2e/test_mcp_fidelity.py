"""MCP fidelity through the mesh (compat.md §4, issue 4): upstream log messages during a call,
cancellation reaching the upstream, list_changed, resources and prompts under policy, ping and
logging/setLevel — one real mesh, the official SDK client over /mcp and over `--mcp` stdio.

Upstreams: the real npm server-everything, behind a `tee` of its stdin (to see what the mesh
sent it, e.g. `notifications/cancelled`), and `dyn`, a minimal MCP server written here (stdio
JSON-RPC, no SDK: it starts in milliseconds) for what server-everything cannot do on demand: add
a tool at run time (`tools/list_changed`) and emit log messages at chosen levels, interleaved
with progress.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.catalog import ServerView
from gateway.frontend import FrontEnd
from gateway.mcp_sdk import create_mcp_http_client
from gateway.mcp_server import MeshMcp
from mesh_config.model import Config, LoadedConfig
from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, text_of

pytestmark = [
    pytest.mark.timeout(60),
    # logging/setLevel is deprecated at 2026-07-28; the handshake-era clients we serve still send
    # it.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

DYN_SERVER = r"""
import json, sys

TOOLS = {
    "grow": {"name": "grow", "description": "add a tool named `name`",
             "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}},
    "log": {"name": "log", "description": "log at each of `levels`, with progress after each",
            "inputSchema": {"type": "object",
                            "properties": {"levels": {"type": "array"},
                                           "tag": {"type": "string"}}}},
}


def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def text(value):
    return {"content": [{"type": "text", "text": value}]}


def call(params):
    name, args = params["name"], params.get("arguments") or {}
    if name == "grow":
        TOOLS[args["name"]] = {"name": args["name"], "description": "grown",
                               "inputSchema": {"type": "object"}}
        send({"method": "notifications/tools/list_changed"})
        return text("grew " + args["name"])
    if name == "log":
        token = (params.get("_meta") or {}).get("progressToken")
        for i, level in enumerate(args["levels"]):
            send({"method": "notifications/message",
                  "params": {"level": level, "logger": "dyn", "data": args["tag"] + " " + level}})
            if token is not None:
                send({"method": "notifications/progress",
                      "params": {"progressToken": token, "progress": i + 1,
                                 "total": len(args["levels"])}})
        return text("logged " + args["tag"])
    return text(name + " called")


for line in sys.stdin:
    request = json.loads(line)
    method, rid = request.get("method"), request.get("id")
    if rid is None:
        continue  # notifications
    if method == "initialize":
        result = {"protocolVersion": request["params"]["protocolVersion"],
                  "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                  "serverInfo": {"name": "dyn", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": list(TOOLS.values())}
    elif method == "tools/call":
        result = call(request["params"])
    elif method in ("ping", "logging/setLevel"):
        result = {}
    else:
        send({"id": rid, "error": {"code": -32601, "message": "Method not found"}})
        continue
    send({"id": rid, "result": result})
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("fidelity")
    wire = tmp / "to-everything.jsonl"
    dyn = tmp / "dyn_server.py"
    dyn.write_text(DYN_SERVER)
    config = {
        "mcp_servers": [
            {
                "name": "everything",
                "command": "sh",
                "args": ["-c", 'tee "$0" | exec "$1" stdio', str(wire), npm_server("everything")],
            },
            {"name": "dyn", "command": sys.executable, "args": [str(dyn)]},
        ],
        "policies": [
            {
                "name": "reader",
                "agent": "reader",
                "rules": [
                    {"tools": ["everything.resource:demo://resource/static/*"], "action": "deny"},
                    {"tools": ["everything.prompt:completable-prompt"], "action": "deny"},
                    {"tools": ["everything.*", "dyn.*"], "action": "allow"},
                ],
            },
            {"name": "default", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }
    with running(Mesh(tmp, config)) as m:
        m.wire = wire  # type: ignore[attr-defined]
        yield m


class Seen:
    """What one client heard, in order: log messages, progress, other notifications."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.events.append(("log", (params.level, params.logger, params.data)))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(("progress", progress))

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification | types.Notification) or hasattr(
            message, "method"
        ):
            self.events.append(("notification", getattr(message, "method", type(message).__name__)))

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]

    def clear(self) -> None:
        self.events.clear()


@asynccontextmanager
async def http_client(
    mesh: Mesh, seen: Seen | None = None, agent: str = "reader"
) -> AsyncIterator[Client]:
    seen = seen or Seen()
    http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{agent}"})
    async with (
        http,
        Client(
            streamable_http_client(f"{mesh.url}/mcp", http_client=http),
            mode="legacy",
            logging_callback=seen.log,
            message_handler=seen.message,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def stdio_client(mesh: Mesh, seen: Seen, agent: str = "reader") -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        env={**os.environ, "AGENT_MESH_HOME": str(mesh.home)},
        args=["-m", "agent_mesh", "--mcp", "--config", str(mesh.config_path), "--mcp-agent", agent],
    )
    async with Client(
        params, mode="legacy", logging_callback=seen.log, message_handler=seen.message
    ) as client:
        yield client


def traces(mesh: Mesh, **query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = mesh.http.get("/traces", params=query).json()
    return found


async def until(predicate: Any, timeout: float, what: str) -> Any:
    """`wait_until` that lets the event loop run (the SDK clients' transports live on it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- logs ---------------------------------------------------------------------------------------


async def test_upstream_logs_reach_the_caller_in_order_and_honour_set_level(mesh: Mesh) -> None:
    seen = Seen()
    async with http_client(mesh, seen) as client:
        caps = client.server_capabilities
        assert caps.logging is not None and caps.resources is not None and caps.prompts is not None
        assert caps.tools is not None and caps.tools.list_changed

        result = await client.call_tool(
            "dyn.log",
            {"levels": ["debug", "info", "error"], "tag": "a"},
            progress_callback=seen.progress,
        )
        assert text_of(result) == "logged a"
        # Everything arrived before the result, interleaved exactly as the upstream sent it.
        assert [e for e in seen.events if e[0] != "notification"] == [
            ("log", ("debug", "dyn", "a debug")),
            ("progress", 1),
            ("log", ("info", "dyn", "a info")),
            ("progress", 2),
            ("log", ("error", "dyn", "a error")),
            ("progress", 3),
        ]

        seen.clear()
        assert isinstance(
            await client.set_logging_level("warning"), types.EmptyResult
        )  # accepted, recorded
        await client.call_tool(
            "dyn.log", {"levels": ["debug", "warning", "info", "critical"], "tag": "b"}
        )
        assert seen.of("log") == [
            ("warning", "dyn", "b warning"),
            ("critical", "dyn", "b critical"),
        ]
        await client.send_ping()

    # A session that did not ask for a level gets everything; the real everything server's
    # simulated logging sends one message at once, during the call that turns it on.
    seen = Seen()
    async with http_client(mesh, seen) as client:
        started = await client.call_tool("everything.toggle-simulated-logging", {})
        logs = seen.of("log")
        await client.call_tool("everything.toggle-simulated-logging", {})  # and off again
    assert "Started simulated" in text_of(started)
    assert len(logs) == 1
    level, _logger, data = logs[0]
    assert level in {
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    }
    assert "-level message" in data or "level-message" in data


# -- cancellation -------------------------------------------------------------------------------


def _sent_to_everything(mesh: Mesh) -> list[dict[str, Any]]:
    lines = mesh.wire.read_text().splitlines()  # type: ignore[attr-defined]
    return [json.loads(line) for line in lines if line.strip()]


def _inflight(mesh: Mesh) -> int:
    """Calls in flight on the everything worker, as `/mcp-servers` reports (refreshed every 1 s)."""
    (entry,) = [s for s in mesh.http.get("/mcp-servers").json() if s["name"] == "everything"]
    return sum(w["inflight"] for w in entry["workers"])


async def cancel_a_long_call(mesh: Mesh, client: Client, duration: int) -> None:
    """Start a long call, cancel it once it runs upstream; prove the upstream was told."""
    first_progress = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tasks:

            async def call() -> None:
                await client.call_tool(
                    "everything.trigger-long-running-operation",
                    {"duration": duration, "steps": 60},
                    progress_callback=on_progress,
                )

            tasks.start_soon(call)
            await first_progress.wait()  # the call is running upstream
            await until(
                lambda: _inflight(mesh) == 1, 3, "the call in flight on the upstream worker"
            )
            cancelled_at = time.monotonic()
            tasks.cancel_scope.cancel()  # the SDK client sends notifications/cancelled
    assert not scope.cancelled_caught

    def upstream_cancelled() -> dict[str, Any] | None:
        sent = _sent_to_everything(mesh)
        call_id = next(
            m["id"]
            for m in sent
            if m.get("method") == "tools/call"
            and m["params"]["arguments"].get("duration") == duration
        )
        return next(
            (
                m
                for m in sent
                if m.get("method") == "notifications/cancelled"
                and m["params"]["requestId"] == call_id
            ),
            None,
        )

    # agent → MCP front-end (handler cancelled) → bus CANCEL → worker task cancelled → upstream
    await until(upstream_cancelled, 3, "notifications/cancelled sent to the upstream")
    assert time.monotonic() - cancelled_at < 3
    await until(lambda: _inflight(mesh) == 0, 3, "no call in flight on the upstream worker")
    # The agent's session and the upstream session go on.
    echo = await client.call_tool("everything.echo", {"message": f"after cancel {duration}"})
    assert text_of(echo) == f"Echo: after cancel {duration}"


async def test_cancel_from_the_agent_reaches_the_upstream(mesh: Mesh) -> None:
    async with http_client(mesh) as client:
        await cancel_a_long_call(mesh, client, duration=30)


# -- the stdio front-end, and list_changed --------------------------------------------------------


async def test_stdio_front_end_logs_cancel_and_tools_list_changed(mesh: Mesh) -> None:
    over_http, over_stdio = Seen(), Seen()
    async with http_client(mesh, over_http) as http, stdio_client(mesh, over_stdio) as stdio:
        caps = stdio.server_capabilities
        assert caps.logging is not None and caps.resources is not None and caps.prompts is not None
        await stdio.send_ping()

        await stdio.set_logging_level("info")
        await stdio.call_tool("dyn.log", {"levels": ["debug", "notice"], "tag": "s"})
        assert over_stdio.of("log") == [("notice", "dyn", "s notice")]

        await cancel_a_long_call(mesh, stdio, duration=31)

        # dyn adds a tool and says so: its worker re-lists and sends UPDATE, the catalogue
        # changes, and every initialized session hears tools/list_changed.
        before = {t.name for t in (await http.list_tools()).tools}
        assert "dyn.grown-1" not in before
        over_http.clear()
        over_stdio.clear()
        grew = await stdio.call_tool("dyn.grow", {"name": "grown-1"})
        assert text_of(grew) == "grew grown-1"
        for seen in (over_http, over_stdio):
            await until(
                lambda seen=seen: "notifications/tools/list_changed" in seen.of("notification"),
                5,
                "tools/list_changed",
            )
        after = {t.name for t in (await http.list_tools(cache_mode="bypass")).tools}
        assert after == before | {"dyn.grown-1"}
        assert "dyn.grown-1" in {
            t.name for t in (await stdio.list_tools(cache_mode="bypass")).tools
        }
        called = await http.call_tool("dyn.grown-1", {})  # the worker knows the new tool too
        assert text_of(called) == "grown-1 called"
        assert over_http.of("notification").count("notifications/tools/list_changed") == 1


async def test_resources_list_changed_from_the_upstream(mesh: Mesh) -> None:
    seen = Seen()
    async with http_client(mesh, seen) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "demo://resource/session/fidelity.gz" not in uris
        # server-everything registers a session resource: it sends
        # notifications/resources/list_changed.
        made = await client.call_tool(
            "everything.gzip-file-as-resource",
            {"name": "fidelity.gz", "data": "data:text/plain,hello%20mesh"},
        )
        assert made.content[0].type == "resource_link"
        await until(
            lambda: "notifications/resources/list_changed" in seen.of("notification"),
            5,
            "resources/list_changed",
        )
        listed = {str(r.uri) for r in (await client.list_resources(cache_mode="bypass")).resources}
        assert listed == uris | {"demo://resource/session/fidelity.gz"}
        read = await client.read_resource("demo://resource/session/fidelity.gz")
        assert read.contents[0].mime_type == "application/gzip"


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


# -- capabilities follow the upstreams ------------------------------------------------------------


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
