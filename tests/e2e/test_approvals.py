"""Human approval end to end with the real tree: REST callers wait, `mesh approve` releases them
with the real upstream result, deny answers 403 and timeout 408; grants, Level-1 memory, webhooks,
the operator token, durability across a kill -9 of the approval worker."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, wait_until

TOKEN = "operator-secret-1"


class Webhooks:
    """A local receiver standing in for the user's webhook endpoint."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Webhooks]:
    w = Webhooks()
    yield w
    w.server.shutdown()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, hooks: Webhooks) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    config = {
        "approval": {"timeout_seconds": 6, "notify_url": hooks.url, "memory_threshold": 2},
        "auth": {"operator_token": TOKEN},
        "trace_file": "traces.jsonl",
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["fs.list_directory"], "action": "allow"},
                    {"tools": ["fs.move_file"], "action": "deny"},
                    {"tools": ["fs.*"], "action": "human_approval"},
                ],
            }
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        m.demo = demo  # type: ignore[attr-defined]
        yield m


def background(
    mesh: Mesh,
    tool: str,
    params: dict[str, Any],
    agent: str = "claude",
    headers: dict[str, str] | None = None,
) -> Future[httpx.Response]:
    pool = ThreadPoolExecutor(1)
    return pool.submit(
        lambda: httpx.post(
            f"{mesh.url}/tool/{tool}",
            json={"params": params},
            timeout=60,
            headers={"Authorization": f"Bearer agent:{agent}", **(headers or {})},
        )
    )


def pending_for(mesh: Mesh, tool: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = mesh.http.get("/approvals", params={"status": "pending", "tool": tool}).json()
        return bool(found)

    wait_until(look, 5, f"a pending approval for {tool}")
    return found[0]


def trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    """The final trace of a call (a call that waited was first traced as pending)."""
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = [
            t
            for t in mesh.http.get("/traces", params={"limit": 200}).json()
            if t["trace_id"] == trace_id and t.get("approval_status") != "pending"
        ]
        return bool(found)

    wait_until(look, 5, f"trace {trace_id}")
    return found[0]


def test_approve_with_mesh_cli_releases_the_waiting_call(mesh: Mesh, hooks: Webhooks) -> None:
    target = mesh.demo / "approved.txt"  # type: ignore[attr-defined]
    call = background(mesh, "fs.write_file", {"path": str(target), "content": "yes"})
    approval = pending_for(mesh, "fs.write_file")
    assert not call.done() and not target.exists()
    shown = mesh.cli("show", approval["id"][:8], token=TOKEN)
    assert shown.returncode == 0 and "fs.write_file" in shown.stdout
    done = mesh.cli("approve", approval["id"][:8], "--reasoning", "looks fine", token=TOKEN)
    assert done.returncode == 0, done.stderr
    r = call.result(timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["approval_status"] == "approved" and target.read_text() == "yes"
    t = trace(mesh, r.json()["trace_id"])
    assert (t["approval_status"], t["approved_by"], t["supervisor_reasoning"]) == (
        "approved",
        "human",
        "looks fine",
    )
    assert t["approval_id"] == approval["id"] and t["approval_ms"] > 0
    (hook,) = [h for h in hooks.received if h["event"] == "pending" and h["id"] == approval["id"]]
    assert (hook["agent_id"], hook["tool"], hook["policy_rule"]) == (
        "claude",
        "fs.write_file",
        "claude",
    )
    assert hook["params"]["path"] == str(target) and hook["timestamp"] == approval["created_at"]
    assert hook["approval"]["status"] == "pending" and "resolved_by" not in hook


def test_deny_answers_403_and_timeout_408(mesh: Mesh) -> None:
    call = background(mesh, "fs.create_directory", {"path": str(mesh.demo / "denied")})  # type: ignore[attr-defined]
    approval = pending_for(mesh, "fs.create_directory")
    r = mesh.http.post(
        f"/approvals/{approval['id']}/deny",
        json={"resolved_by": "alice", "reasoning": "no"},
        headers={"X-Operator-Token": TOKEN},
    )
    assert r.status_code == 200 and (r.json()["status"], r.json()["id"]) == (
        "denied",
        approval["id"],
    )
    denied = call.result(timeout=10)
    assert denied.status_code == 403 and denied.json()["approval_status"] == "denied"
    assert trace(mesh, denied.json()["trace_id"])["approved_by"] == "alice"
    again = mesh.http.post(
        f"/approvals/{approval['id']}/approve", json={}, headers={"X-Operator-Token": TOKEN}
    )
    assert again.status_code == 409 and "already denied" in again.json()["error"]

    started = time.monotonic()
    demo = mesh.demo  # type: ignore[attr-defined]
    timed_out = background(mesh, "fs.create_directory", {"path": str(demo / "late")}).result(20)
    assert timed_out.status_code == 408 and timed_out.json()["approval_status"] == "timeout"
    assert (
        timed_out.json()["policy"] == "human_approval" and "timed out" in timed_out.json()["error"]
    )
    assert 5.5 < time.monotonic() - started < 11
    assert trace(mesh, timed_out.json()["trace_id"])["approval_status"] == "timeout"


def test_operator_token_and_unknown_or_ambiguous_ids(mesh: Mesh) -> None:
    call = background(mesh, "fs.read_text_file", {"path": str(mesh.demo / "a.txt")})  # type: ignore[attr-defined]
    approval = pending_for(mesh, "fs.read_text_file")
    # The agent itself (no operator token) cannot approve its own request.
    r = mesh.http.post(
        f"/approvals/{approval['id']}/approve",
        json={},
        headers={"Authorization": "Bearer agent:claude"},
    )
    assert r.status_code == 403 and "operator token" in r.json()["error"]
    assert mesh.cli("approve", approval["id"]).returncode != 0
    assert (
        mesh.http.post(
            "/approvals/ffffffff/approve", json={}, headers={"X-Operator-Token": TOKEN}
        ).status_code
        == 404
    )
    assert (
        mesh.http.post(
            "/approvals/a/approve", json={}, headers={"X-Operator-Token": TOKEN}
        ).status_code
        == 400
    )
    assert (
        mesh.http.post(
            f"/approvals/{approval['id']}/maybe", json={}, headers={"X-Operator-Token": TOKEN}
        ).status_code
        == 404
    )
    detail = mesh.http.get(f"/approvals/{approval['id'][:8]}").json()
    assert detail["id"] == approval["id"] and isinstance(detail["recent_traces"], list)
    assert (
        "injection_risk" not in detail and "active_grants" in detail
    )  # false is omitted, as in Go
    mesh.cli("approve", approval["id"], token=TOKEN)
    assert call.result(timeout=10).json()["result"]["content"][0]["text"] == "alpha"


def test_grants_turn_approval_into_allow_and_expire(mesh: Mesh) -> None:
    headers = {"X-Operator-Token": TOKEN}
    assert (
        mesh.http.post(
            "/grants", json={"agent": "claude", "tools": ["fs.get_*"], "duration": "1s"}
        ).status_code
        == 403
    )
    grant = mesh.http.post(
        "/grants",
        json={"agent": "claude", "tools": ["fs.get_*"], "duration": "2s"},
        headers=headers,
    )
    assert grant.status_code == 201
    gid = grant.json()["id"]
    assert gid in {g["id"] for g in mesh.http.get("/grants").json()}
    ok = mesh.call("fs.get_file_info", {"path": str(mesh.demo / "a.txt")})  # type: ignore[attr-defined]
    assert ok.status_code == 200 and ok.json()["policy"] == "allow"
    assert trace(mesh, ok.json()["trace_id"])["policy_rule"] == f"grant:{gid}"
    # A grant never overrides deny.
    assert mesh.call("fs.move_file", {"source": "a", "destination": "b"}).status_code == 403
    time.sleep(2.2)  # the grant's 2 s pass: time passing is the case tested
    # Expired: back to approval (the call waits for one; denied here rather than left to time out)
    params = {"path": str(mesh.demo / "a.txt"), "n": 2}  # type: ignore[attr-defined]
    call = background(mesh, "fs.get_file_info", params)
    approval = pending_for(mesh, "fs.get_file_info")
    assert approval["params"] == params
    mesh.http.post(f"/approvals/{approval['id']}/deny", json={}, headers=headers)
    expired = call.result(timeout=10)
    assert expired.status_code == 403 and expired.json()["approval_status"] == "denied"
    revoked = mesh.http.delete(f"/grants/{gid}", headers=headers)
    assert revoked.status_code == 200 and {k: revoked.json()[k] for k in ("status", "id")} == {
        "status": "revoked",
        "id": gid,
    }
    assert mesh.http.delete(f"/grants/{gid}", headers=headers).status_code == 404
    bad = mesh.http.post(
        "/grants", json={"agent": "claude", "tools": ["x"], "duration": "soon"}, headers=headers
    )
    assert bad.status_code == 400 and "duration" in bad.json()["error"]


def test_level1_memory_auto_approves_and_deny_resets(mesh: Mesh) -> None:
    def approve_next(
        tool: str, params: dict[str, Any], decision: str = "approve"
    ) -> httpx.Response:
        call = background(mesh, tool, params)
        approval = pending_for(mesh, tool)
        mesh.http.post(
            f"/approvals/{approval['id']}/{decision}", json={}, headers={"X-Operator-Token": TOKEN}
        )
        return call.result(timeout=10)

    d = str(mesh.demo)  # type: ignore[attr-defined]
    assert approve_next("fs.directory_tree", {"path": d}).status_code == 200
    assert approve_next("fs.directory_tree", {"path": d + "/"}).status_code == 200
    auto = mesh.call("fs.directory_tree", {"path": d + "//"})  # same shape: remembered
    assert auto.status_code == 200 and auto.json()["approved_by"] == "auto:memory"
    assert trace(mesh, auto.json()["trace_id"])["approved_by"] == "auto:memory"
    # A different parameter shape is not covered by memory, and a deny resets its count:
    # approve, deny, approve leaves one approval — not enough, the next one waits for a human.
    other = {"path": d, "excludePatterns": []}
    assert approve_next("fs.directory_tree", other).status_code == 200
    assert approve_next("fs.directory_tree", {**other, "path": d + "/"}, "deny").status_code == 403
    assert approve_next("fs.directory_tree", {**other, "path": d + "//"}).status_code == 200
    assert (
        approve_next("fs.directory_tree", {**other, "path": d + "/./"}, "deny").status_code == 403
    )


def test_webhook_callback_url_gets_the_resolution(mesh: Mesh, hooks: Webhooks) -> None:
    call = background(
        mesh, "fs.list_allowed_directories", {}, headers={"X-Callback-URL": hooks.url}
    )
    approval = pending_for(mesh, "fs.list_allowed_directories")
    mesh.cli("approve", approval["id"][:8], token=TOKEN)
    assert call.result(timeout=10).status_code == 200
    wait_until(
        lambda: any(
            h["event"] == "approved" and h["id"] == approval["id"] and h["resolved_by"]
            for h in hooks.received
        ),
        5,
        "the callback webhook",
    )


def test_approval_worker_killed_while_a_call_waits(mesh: Mesh) -> None:
    call = background(mesh, "fs.search_files", {"path": str(mesh.demo), "pattern": "a"})  # type: ignore[attr-defined]
    approval = pending_for(mesh, "fs.search_files")
    (pid,) = mesh.role_pids("approval")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: mesh.role_pids("approval") not in ([], [pid]), 10, "approval worker restarted"
    )
    # The pending approval survived, and the waiting caller is still waiting for it.
    wait_until(
        lambda: (
            approval["id"] in str(mesh.http.get("/approvals", params={"status": "pending"}).json())
        ),
        5,
        "the approval still pending after the restart",
    )
    assert not call.done()
    assert mesh.cli("approve", approval["id"], token=TOKEN).returncode == 0
    r = call.result(timeout=10)
    assert r.status_code == 200 and r.json()["approval_status"] == "approved"


def test_mesh_watch_is_interactive(mesh: Mesh) -> None:
    """`mesh watch` in a real pseudo-terminal: it lists the pending call and `a` (then Enter for no
    reason) approves it."""
    import pty

    call = background(mesh, "fs.list_allowed_directories", {"watch": True})
    approval = pending_for(mesh, "fs.list_allowed_directories")
    pid, fd = pty.fork()
    if pid == 0:  # the child runs `mesh watch` on the pty
        os.environ.update(MESH_URL=mesh.url, MESH_OPERATOR_TOKEN=TOKEN, COLUMNS="160")
        os.execv(
            sys.executable,
            [sys.executable, "-c", "from agent_mesh.mesh_cli import main; main(['watch'])"],
        )
    screen = b""
    try:
        end = time.monotonic() + 15
        while approval["id"][:8].encode() not in screen and time.monotonic() < end:
            ready, _, _ = __import__("select").select([fd], [], [], 0.5)
            if ready:
                screen += os.read(fd, 65536)
        assert approval["id"][:8].encode() in screen, screen[-500:]
        os.write(fd, b"a\r")  # approve, no reason
        r = call.result(timeout=10)
        assert r.status_code == 200 and r.json()["approval_status"] == "approved"
        os.write(fd, b"q")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
