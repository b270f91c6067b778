"""Each way an upstream call fails, with the real server-everything behind the real tree, gets its
own status and says what happened once (issue 9, item 6): the upstream's own JSON-RPC error, the
upstream server gone mid-call, its worker dead mid-call, a timeout."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import cmdline, descendants, npm_server, wait_until

TIMEOUT = 3.0
LONG = "everything.trigger-long-running-operation"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = {
        "mcp_servers": [
            {
                "name": "everything",
                "command": npm_server("everything"),
                "args": ["stdio"],
                "timeout_seconds": TIMEOUT,
            }
        ],
        "policies": [{"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config), timeout=60) as m:
        yield m


@pytest.fixture(autouse=True)
def healthy(mesh: Mesh) -> None:
    wait_until(lambda: mesh.http.get("/ready").status_code == 200, 20, "a ready mesh")


def _traced(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    traces = mesh.http.get("/traces", params={"limit": 50}).json()
    (trace,) = [t for t in traces if t["trace_id"] == trace_id]
    return dict(trace)


def _worker(mesh: Mesh) -> int:
    (pid,) = mesh.serving("everything")
    return pid


def _server(worker: int) -> int:
    (node,) = [p for p in descendants(worker) if "node" in cmdline(p)][:1]
    return node


def _bytes_read(pid: int) -> int:
    """What `pid` has read so far (/proc/<pid>/io): an idle MCP server reads only requests."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["rchar"])


def _in_flight_then(mesh: Mesh, kill: int) -> httpx.Response:
    """A long call, and `kill` -9'd once the upstream server has read it."""
    server = _server(_worker(mesh))
    read_before = _bytes_read(server)
    answer: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answer.append(
            mesh.call(LONG, {"duration": 30, "steps": 1, "n": uuid.uuid4().hex})
        )
    )
    thread.start()

    wait_until(lambda: _bytes_read(server) > read_before, 10, "the server to read the call")
    os.kill(kill, signal.SIGKILL)
    thread.join(20)
    (response,) = answer
    return response


def test_the_upstreams_own_error_is_a_502_that_says_so(mesh: Mesh) -> None:
    worker = _worker(mesh)
    params = {"url": "https://example.org", "errorPath": True, "elicitationId": uuid.uuid4().hex}
    r = mesh.call("everything.trigger-url-elicitation", params)
    assert r.status_code == 502, r.text
    body = r.json()
    # [its JSON-RPC code] its message, as it sent it
    assert body["error"].startswith(
        "upstream error from everything.trigger-url-elicitation: [-32042] "
    ), body
    assert body["error"].endswith("This request requires browser-based authorization."), body
    assert body["policy"] == "allow"
    trace = _traced(mesh, body["trace_id"])
    assert (trace["status_code"], trace["error"]) == (502, body["error"])
    # Nothing was unavailable: same worker, and it serves the next call.
    assert _worker(mesh) == worker and mesh.http.get("/ready").status_code == 200
    assert mesh.call("everything.echo", {"message": "still here"}).status_code == 200


def test_the_upstream_server_gone_mid_call_is_a_502_naming_it(mesh: Mesh) -> None:
    r = _in_flight_then(mesh, _server(_worker(mesh)))
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    # (process N exited with -9, or its stdout closed: whichever the worker saw first)
    assert error.startswith("upstream 'everything' went away during tools/call ("), error
    assert "unavailable" not in error


def test_the_worker_dead_mid_call_is_a_502_naming_it(mesh: Mesh) -> None:
    r = _in_flight_then(mesh, _worker(mesh))
    assert r.status_code == 502, r.text
    assert r.json()["error"] == (
        "upstream everything: its worker died during the call (upstream.everything: worker died)"
    ), r.json()


def test_no_answer_in_time_is_a_504_naming_server_and_tool(mesh: Mesh) -> None:
    r = mesh.call(LONG, {"duration": 30, "steps": 1, "n": uuid.uuid4().hex})
    assert r.status_code == 504, r.text
    assert (
        r.json()["error"]
        == f"upstream timeout: {LONG} gave no answer in {TIMEOUT:g}s (cancelled upstream)"
    )


async def test_over_mcp_the_upstreams_own_error_is_a_tool_error_that_says_so(mesh: Mesh) -> None:
    params = {"url": "https://example.org", "errorPath": True, "elicitationId": uuid.uuid4().hex}
    async with mesh.mcp("mcp-errors") as client:
        result = await client.call_tool("everything.trigger-url-elicitation", params)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("upstream error from everything.trigger-url-elicitation: [-32042] "), (
        text
    )
    assert "unavailable" not in text
