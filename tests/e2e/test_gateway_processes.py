"""`gateway: {processes: 2}`: two gateway processes on one port (SO_REUSEPORT) under the real
supervisord, both serving; REST calls, approvals and policy reloads whichever process a
connection lands on; an /mcp session (the SDK's client, a new connection per request) whose
requests land on both processes; a SIGHUP to either process reloads, and a reload without the
operator token is refused on either; one process killed, the other serves on (gateway/peers.py).

A new connection per request: the kernel picks the process per connection, so a client that
keeps its connection alive would stay on one."""

from __future__ import annotations

import functools
import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.mesh import Mesh, running
from tests.support import alive, cmdline, npm_server, text_of, wait_until

TOKEN = "processes-operator-token"
OPS = {"X-Operator-Token": TOKEN}
POLICIES = [
    {
        "name": "p",
        "agent": "*",
        "rules": [
            {"tools": ["fs.write_file"], "action": "human_approval"},
            {"tools": ["*"], "action": "allow"},
        ],
    }
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Iterator[Mesh]:
    config = {
        "gateway": {"processes": 2},
        "auth": {"operator_token": TOKEN},
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]},
            {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]},
        ],
        "policies": POLICIES,
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        m.demo = demo  # type: ignore[attr-defined]
        yield m


def fresh(
    mesh: Mesh, method: str, path: str, agent: str | None = "claude", **kwargs: Any
) -> httpx.Response:
    """One request on a new connection (the kernel picks the gateway process)."""
    auth = {"Authorization": f"Bearer agent:{agent}"} if agent else {}
    headers = {**auth, **kwargs.pop("headers", {})}
    kwargs.setdefault("timeout", 30)
    return httpx.request(method, f"{mesh.url}{path}", headers=headers, **kwargs)


def scrape(mesh: Mesh) -> tuple[int, int, int]:
    """(slot, pid, /mcp requests it forwarded) of the process that answered a /metrics scrape."""
    text = fresh(mesh, "GET", "/metrics").text
    found = re.search(r'agent_mesh_gateway_process\{pid="(\d+)",slot="(\d+)"\} 1', text)
    assert found, text[:2000]
    forwarded = re.search(r"^agent_mesh_mcp_forwarded_total (\S+)$", text, re.MULTILINE)
    assert forwarded
    return int(found[2]), int(found[1]), int(float(forwarded[1]))


def gateways(mesh: Mesh) -> dict[int, int]:
    """slot → pid of the gateway processes running now."""
    out = {}
    for pid in mesh.role_pids("gateway"):
        slot = re.search(r"--slot (\d+)", cmdline(pid))
        assert slot, cmdline(pid)
        out[int(slot[1])] = pid
    return out


def seen_by_scrapes(mesh: Mesh, want: set[int]) -> dict[int, int]:
    """slot → forwarded count, scraping until every slot in `want` answered."""
    seen: dict[int, int] = {}

    def look() -> bool:
        slot, _pid, forwarded = scrape(mesh)
        seen[slot] = forwarded
        return want <= seen.keys()

    wait_until(look, 30, f"scrapes answered by gateway processes {sorted(want)}")
    return seen


def test_two_processes_serve_one_port(mesh: Mesh) -> None:
    running_now = gateways(mesh)
    assert set(running_now) == {0, 1}
    pids = set()

    def look() -> bool:
        slot, pid, _ = scrape(mesh)
        assert running_now[slot] == pid
        pids.add(pid)
        return len(pids) == 2

    wait_until(look, 30, "/metrics answered by both gateway processes")
    # each has its own unix socket, where the other reaches it
    assert all((mesh.state / f"gateway-{slot}.sock").exists() for slot in (0, 1))


def test_rest_calls_and_approvals_on_either_process(mesh: Mesh) -> None:
    for i in range(12):
        r = fresh(mesh, "POST", "/tool/everything.echo", json={"params": {"message": f"m{i}"}})
        assert r.status_code == 200, r.text
        assert f"m{i}" in r.text
    target = mesh.demo / "approved.txt"  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            fresh,
            mesh,
            "POST",
            "/tool/fs.write_file",
            json={"params": {"path": str(target), "content": "ok"}},
            timeout=60,
        )
        pending: list[dict[str, Any]] = []

        def look() -> bool:
            pending[:] = fresh(mesh, "GET", "/approvals", None, params={"status": "pending"}).json()
            return bool(pending)

        wait_until(look, 15, "the write's pending approval")
        assert not call.done(), call.result().text
        assert not call.done() and not target.exists()
        approve = fresh(
            mesh, "POST", f"/approvals/{pending[0]['id']}/approve", None, json={}, headers=OPS
        )
        assert approve.status_code == 200, approve.text
        assert call.result(timeout=30).status_code == 200
    assert target.read_text() == "ok"


def test_reload_reaches_every_process(mesh: Mesh) -> None:
    config = yaml.safe_load(mesh.config_path.read_text())
    config["policies"] = [
        {
            "name": "no-echo",
            "agent": "*",
            "rules": [{"tools": ["everything.echo"], "action": "deny"}],
        },
        *POLICIES,
    ]
    mesh.config_path.write_text(yaml.safe_dump(config))
    try:
        statuses = [fresh(mesh, "POST", "/reload", agent=None, headers=OPS) for _ in range(6)]
        assert all(r.status_code == 200 for r in statuses), [r.text for r in statuses]
        assert {r.json()["status"] for r in statuses} <= {"reloaded", "unchanged"}
        generation = statuses[-1].json()["generation"]
        # Every process's /health shows the one set in force; every call is checked against it.
        for _ in range(8):
            health = fresh(mesh, "GET", "/health").json()["policy_set"]
            assert health["generation"] == generation and health["policies"] == 2
            denied = fresh(mesh, "POST", "/tool/everything.echo", json={"params": {"message": "x"}})
            assert denied.status_code == 403, denied.text
    finally:
        config["policies"] = POLICIES
        mesh.config_path.write_text(yaml.safe_dump(config))
        assert fresh(mesh, "POST", "/reload", agent=None, headers=OPS).status_code == 200


def test_a_sighup_to_either_process_reloads_and_no_request_without_the_token(mesh: Mesh) -> None:
    log = mesh.state / "logs" / "gateway-0.log"

    def reloads() -> int:  # process 0's reloader, on a SIGHUP (its own or passed on)
        return log.read_text().count("reload (SIGHUP)")

    for slot in (0, 1):  # a local operator's signal: `kill -HUP`, `supervisorctl signal HUP`
        before = reloads()
        os.kill(gateways(mesh)[slot], signal.SIGHUP)
        wait_until(
            functools.partial(lambda b: reloads() > b, before),
            15,
            f"the reload of a SIGHUP to process {slot}",
        )
    assert (
        "SIGHUP passed on to gateway process 0"
        in (mesh.state / "logs" / "gateway-1.log").read_text()
    )
    # Over HTTP, on either process (process 1 passes the request on), the token is still needed.
    for _ in range(6):
        refused = fresh(mesh, "POST", "/reload", agent=None)
        assert refused.status_code == 403 and "operator token required" in refused.text


async def test_mcp_session_on_both_processes(mesh: Mesh) -> None:
    before = seen_by_scrapes(mesh, {0, 1})
    # No kept-alive connections: each request of the session lands where the kernel puts it.
    http = httpx2.AsyncClient(  # the SDK's HTTP client library
        headers={"Authorization": "Bearer agent:claude"},
        timeout=httpx2.Timeout(30, read=300),
        limits=httpx2.Limits(max_keepalive_connections=0),
    )
    steps: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async with (
        http,
        Client(streamable_http_client(f"{mesh.url}/mcp", http_client=http), mode="legacy") as c,
    ):
        names = {t.name for t in (await c.list_tools()).tools}
        assert "everything.echo" in names
        for i in range(16):
            result = await c.call_tool("everything.echo", {"message": f"hop {i}"})
            assert not result.is_error and f"hop {i}" in text_of(result)
        long = await c.call_tool(
            "everything.trigger-long-running-operation",
            {"duration": 1, "steps": 2},
            progress_callback=on_progress,
        )
        assert not long.is_error and steps, text_of(long)
    after = seen_by_scrapes(mesh, {0, 1})
    # 18+ requests on new connections: some landed on the process that does not hold the session
    assert sum(after.values()) > sum(before.values())


MCP = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ECHO = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}


def session_on(mesh: Mesh, slot: int) -> dict[str, str]:
    """Headers of an initialized raw /mcp session held by gateway process `slot`."""
    found: dict[str, str] = {}

    def look() -> bool:
        r = fresh(mesh, "POST", "/mcp", json=INIT, headers=MCP)
        assert r.status_code == 200, r.text
        found.update({**MCP, "Mcp-Session-Id": r.headers["mcp-session-id"]})
        return r.headers["mcp-session-id"].startswith(f"g{slot}-")

    wait_until(look, 30, f"a session held by gateway process {slot}")
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert fresh(mesh, "POST", "/mcp", json=done, headers=found).status_code == 202
    return found


def echo_on(mesh: Mesh, headers: dict[str, str], message: str) -> httpx.Response:
    params = {"name": "everything.echo", "arguments": {"message": message}}
    return fresh(mesh, "POST", "/mcp", json={**ECHO, "params": params}, headers=headers)


def test_one_process_killed_the_other_serves(mesh: Mesh) -> None:
    orphan = session_on(mesh, 1)
    assert echo_on(mesh, orphan, "before").status_code == 200
    victim = gateways(mesh)[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 10, "the killed gateway process gone")
    for i in range(10):
        r = fresh(mesh, "POST", "/tool/everything.echo", json={"params": {"message": f"k{i}"}})
        assert r.status_code == 200, r.text
    # Its sessions are gone with it: 404, on which a client opens a new session, which works.
    gone = echo_on(mesh, orphan, "after")
    assert gone.status_code == 404, gone.text
    again = echo_on(mesh, session_on(mesh, 0), "again")
    assert again.status_code == 200 and "again" in again.text
    # supervisord starts it again, and it serves again
    wait_until(lambda: set(gateways(mesh)) == {0, 1}, 30, "gateway process 1 restarted")
    seen_by_scrapes(mesh, {0, 1})
