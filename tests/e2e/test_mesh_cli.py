"""The `mesh` command through its real entry point (`python -m agent_mesh.mesh_cli`) against a
real mesh: --json on either side of the subcommand, grant and revoke, traces that fit 80
columns (an error whole, wrapped below its row), `show` with the agent's recent traces, and
`mesh watch` in a pseudo-terminal (skip, reasons)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_mesh.mesh_client import items
from agent_mesh.tables import clock
from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, wait_until

TOKEN = "operator-secret-cli"
CLOCK = re.compile(r"^\d\d:\d\d:\d\d  ")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    config = {
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "auth": {"operator_token": TOKEN},
        "mcp_servers": [
            {"name": "filesystem", "command": npm_server("filesystem"), "args": [str(demo)]}
        ],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {
                        "tools": [
                            "filesystem.list_directory",
                            "filesystem.list_allowed_directories",
                        ],
                        "action": "allow",
                    },
                    {"tools": ["filesystem.*"], "action": "human_approval"},
                ],
            }
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        m.demo = demo  # type: ignore[attr-defined]
        yield m


def mesh_cli(
    mesh: Mesh, *args: str, token: bool = True, columns: int = 80
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_URL": mesh.url, "COLUMNS": str(columns)}
    env.pop("MESH_OPERATOR_TOKEN", None)
    if token:
        env["MESH_OPERATOR_TOKEN"] = TOKEN
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh.mesh_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def background(mesh: Mesh, tool: str, params: dict[str, Any]) -> Future[httpx.Response]:
    return ThreadPoolExecutor(1).submit(
        lambda: httpx.post(
            f"{mesh.url}/tool/{tool}",
            json={"params": params},
            timeout=60,
            headers={"Authorization": "Bearer agent:claude"},
        )
    )


def pending(mesh: Mesh, tool: str | None = None) -> list[dict[str, Any]]:
    params = {"status": "pending", **({"tool": tool} if tool else {})}
    return items(mesh.http.get("/approvals", params=params).json())


def pending_for(mesh: Mesh, tool: str) -> dict[str, Any]:
    wait_until(lambda: pending(mesh, tool), 5, f"a pending approval for {tool}")
    return pending(mesh, tool)[0]


def trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = [
            t
            for t in items(mesh.http.get("/traces", params={"limit": 50}).json())
            if t["trace_id"] == trace_id
        ]
        return bool(found)

    wait_until(look, 5, f"trace {trace_id}")
    return found[0]


def test_json_before_or_after_the_subcommand(mesh: Mesh) -> None:
    import json

    for args in (["--json", "health"], ["health", "--json"]):
        out = mesh_cli(mesh, *args)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] in ("ok", "healthy")
    table = mesh_cli(mesh, "health")
    assert table.returncode == 0 and "filesystem" in table.stdout and "up" in table.stdout


def test_grant_and_revoke(mesh: Mesh) -> None:
    target = mesh.demo / "granted.txt"  # type: ignore[attr-defined]
    refused = mesh_cli(
        mesh, "grant", "claude", "filesystem.write_file", "--for", "30m", token=False
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().endswith("(HTTP 403) (set MESH_OPERATOR_TOKEN)"), refused.stderr
    made = mesh_cli(
        mesh, "grant", "claude", "filesystem.write_file", "filesystem.edit_*", "--for", "30m"
    )
    assert made.returncode == 0, made.stderr
    match = re.fullmatch(
        r"grant ([0-9a-f]{8}): claude may call filesystem.write_file, filesystem.edit_\* "
        r"without approval until (\d\d:\d\d:\d\d) \(mesh revoke \1 ends it\)\n",
        made.stdout,
    )
    assert match, made.stdout
    grant_id = match.group(1)
    r = mesh.call("filesystem.write_file", {"path": str(target), "content": "granted"})
    assert r.status_code == 200, r.text  # no approval asked for
    assert trace(mesh, r.json()["trace_id"])["policy_rule"].startswith(f"grant:{grant_id}")
    listed = mesh_cli(mesh, "grants")
    assert grant_id in listed.stdout and "filesystem.write_file" in listed.stdout
    revoked = mesh_cli(mesh, "revoke", grant_id)
    assert revoked.returncode == 0 and revoked.stdout == f"grant {grant_id} revoked\n"
    assert mesh_cli(mesh, "grants").stdout == "no active grants\n"
    again = mesh_cli(mesh, "revoke", grant_id)
    assert (
        again.returncode == 1
        and "already revoked" in again.stderr
        and len(again.stderr.splitlines()) == 1
    )
    bad = mesh_cli(mesh, "grant", "claude", "filesystem.x", "--for", "soon")
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "Traceback" not in bad.stderr


def test_traces_fit_80_columns(mesh: Mesh) -> None:
    r = mesh.call("filesystem.list_allowed_directories", {"padding": "x" * 200})
    assert r.status_code == 200
    out = mesh_cli(mesh, "traces", "--limit", "5", columns=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:3] == ["TIME", "AGENT", "TOOL"]
    assert CLOCK.match(lines[1]) and "filesystem.list_allowed_directories" in lines[1], lines[1]
    wide = mesh_cli(mesh, "traces", "--limit", "1", columns=200).stdout.splitlines()
    assert '{"padding":"xxxx' in wide[1] and wide[1].endswith("…") and len(wide[1]) <= 200


def test_an_error_is_shown_whole_at_80_columns(mesh: Mesh) -> None:
    denied = mesh.call("filesystem.list_allowed_directories", {"why": "a long error"}, agent="x")
    assert denied.status_code == 403
    error = items(mesh.http.get("/traces", params={"agent": "x", "limit": 1}).json())[0]["error"]
    assert len(error) > 40, error  # longer than the room an 80-column row has left for it
    out = mesh_cli(mesh, "traces", "--agent", "x", "--limit", "1", columns=80)
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert CLOCK.match(lines[1]) and "403" in lines[1].split(), lines
    assert " ".join(line.strip() for line in lines[2:]) == error, lines


def test_show_has_the_recent_traces_it_promises(mesh: Mesh) -> None:
    listed = mesh.call("filesystem.list_directory", {"path": str(mesh.demo)})  # type: ignore[attr-defined]
    assert listed.status_code == 200
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    call = background(mesh, "filesystem.read_text_file", {"path": str(demo / "a.txt")})
    approval = pending_for(mesh, "filesystem.read_text_file")
    try:
        out = mesh_cli(mesh, "show", approval["id"][:8], columns=100)
        assert out.returncode == 0, out.stderr
        assert f"id             {approval['id']}" in out.stdout
        assert "recent traces of claude" in out.stdout
        recent = out.stdout.split("recent traces of claude", 1)[1]
        assert "filesystem.list_directory" in recent and "TOOL" in recent
    finally:
        mesh_cli(mesh, "deny", approval["id"])
        call.result(timeout=10)


class Terminal:
    """`mesh watch` on a pseudo-terminal: what it shows, and keys typed at it."""

    def __init__(self, mesh: Mesh) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: mesh watch on the pty
            os.environ.update(MESH_URL=mesh.url, MESH_OPERATOR_TOKEN=TOKEN, COLUMNS="120")
            os.execv(sys.executable, [sys.executable, "-m", "agent_mesh.mesh_cli", "watch"])
        self.output = b""

    def screen(self) -> str:
        """The last screen drawn (everything after the last clear)."""
        return self.output.decode(errors="replace").rsplit("\x1b[2J", 1)[-1]

    def wait_for(self, predicate: Any, what: str, timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.screen()):
                return self.screen()
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                self.output += os.read(self.fd, 65536)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen()}")

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self) -> int | None:
        self.type("q")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        return None


def test_watch_skip_keeps_the_skipped_approval_in_sight_and_asks_for_reasons(mesh: Mesh) -> None:
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    first = background(mesh, "filesystem.get_file_info", {"path": str(demo / "a.txt")})
    approval = pending_for(mesh, "filesystem.get_file_info")
    short = approval["id"][:8]
    term = Terminal(mesh)
    try:
        term.wait_for(
            lambda s: f"{short} claude → filesystem.get_file_info" in s,
            "the approval to be current",
        )
        term.type("s")
        skipped = term.wait_for(lambda s: "all skipped" in s, "the skipped screen")
        assert "nothing pending" not in skipped
        assert (
            f"1 pending, all skipped ({short})" in skipped
            and "skipped" in skipped.split("\n", 3)[2]
        )
        term.type("u")
        term.wait_for(
            lambda s: f"{short} claude → filesystem.get_file_info" in s, "the approval back"
        )
        term.type("d")
        term.wait_for(lambda s: f"reason to deny {short}" in s, "the reason prompt")
        term.type("\x1b\r")  # Esc Enter: changed my mind
        term.wait_for(lambda s: f"{short}: not denied (cancelled)" in s, "the cancelled decision")
        assert not first.done() and pending(mesh, "filesystem.get_file_info")
        term.type("d")
        term.wait_for(
            lambda s: f"reason to deny {short}" in s.rsplit("cancelled", 1)[-1], "the prompt again"
        )
        term.type("outside the task\r")
        denied = first.result(timeout=10)
        assert denied.status_code == 403 and "outside the task" in denied.json()["error"]
        term.wait_for(
            lambda s: "nothing pending" in s and f"{short}: denied" in s, "the empty queue"
        )

        second = background(mesh, "filesystem.directory_tree", {"path": str(mesh.demo)})  # type: ignore[attr-defined]
        other = pending_for(mesh, "filesystem.directory_tree")
        term.wait_for(
            lambda s: f"{other['id'][:8]} claude → filesystem.directory_tree" in s, "the second one"
        )
        term.type("a")
        term.wait_for(lambda s: f"reason to approve {other['id'][:8]}" in s, "the reason prompt")
        term.type("\r")  # no reason
        assert second.result(timeout=10).status_code == 200
        resolved = mesh.http.get(f"/approvals/{other['id']}").json()
        assert resolved["status"] == "approved" and not resolved.get("reasoning")
    finally:
        status = term.close()
    assert status == 0


def test_clock_reads_trace_times(mesh: Mesh) -> None:
    """(the CLI's clock is the one the tables test pins down; here on a real trace)"""
    traces = items(mesh.http.get("/traces", params={"limit": 1}).json())
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock(traces[0]["timestamp"]))
