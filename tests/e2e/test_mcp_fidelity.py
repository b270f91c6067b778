"""MCP fidelity through the mesh (compat.md §4, issue 4): upstream log messages during a call,
cancellation reaching the upstream, list_changed from a tool added at run time, ping and
logging/setLevel — over /mcp and over `--mcp` stdio, with the official SDK client. Resources and
prompts: test_mcp_fidelity_resources.py (the same mesh: tests/e2e/fidelity.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from tests.e2e.fidelity import Seen, http_client, stdio_client, until
from tests.e2e.mesh import Mesh
from tests.support import text_of

pytestmark = [
    pytest.mark.timeout(60),
    # logging/setLevel is deprecated at 2026-07-28; the handshake-era clients we serve still send
    # it.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


@pytest.fixture(scope="module")
def mesh(fidelity_mesh: Mesh) -> Mesh:
    return fidelity_mesh


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
    text = mesh.wire.read_text()  # type: ignore[attr-defined]
    complete = text[: text.rfind("\n") + 1]  # a line tee is still writing is not read yet
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


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
