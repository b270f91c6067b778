"""Failure paths with the real tree: upstreams that cannot start (each says why, and is retried
with a back-off, not in a loop), each upstream's lifecycle state in /health, /ready and
`mesh health`, an upstream killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import frames
from bus.state_dir import StateDir
from tests.e2e.mesh import Mesh
from tests.support import cmdline, descendants, npm_server, wait_until
from workers.upstream_lifecycle import HEALTHY_RUN


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    config = {
        "mcp_servers": [
            {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]},
            {"name": "broken", "command": str(demo / "no-such-server")},
            {"name": "missing", "command": "does-not-exist"},
            {
                "name": "crashing",
                "command": "sh",
                "args": ["-c", "echo starting >&2; echo 'fatal: bad config' >&2; exit 2"],
            },
        ],
        "policies": [
            {
                "name": "all",
                "agent": "*",
                "rules": [
                    {"tools": ["*"], "action": "allow"},
                ],
            }
        ],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config)
    # /ready stays 503 here (broken upstreams): wait for fs and for a policy worker, which
    # serves once it has the kill switch's freezes from the approval service.
    m.start(
        ready=lambda health: (
            health["upstreams"].get("fs") == "up" and health["services"]["policy"]["workers"] > 0
        )
    )
    m.demo = demo  # type: ignore[attr-defined]
    yield m
    assert m.stop() == set()


def test_broken_upstream_is_reported_and_isolated(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.call("broken.anything", {"x": 1})
    assert r.status_code == 503
    assert r.json()["error"].startswith("upstream unavailable: broken")
    health = mesh.http.get("/health")  # the gateway answers: 200, degraded
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["upstreams"] == {
        "fs": "up",
        "broken": "down",
        "missing": "down",
        "crashing": "down",
    }
    assert mesh.http.get("/ready").status_code == 503
    servers = {s["name"]: s for s in mesh.http.get("/mcp-servers").json()}
    assert servers["broken"]["status"] == "error" and servers["fs"]["status"] == "ready"
    ok = mesh.call("fs.list_allowed_directories")
    assert ok.status_code == 200, ok.text


def test_each_down_upstream_says_why(mesh: Mesh) -> None:
    demo: Path = mesh.demo  # type: ignore[attr-defined]
    reasons = {
        "broken": f"command '{demo / 'no-such-server'}' not found",
        "missing": "command 'does-not-exist' not found on PATH",
        "crashing": "exited with code 2: fatal: bad config",
    }
    wait_until(
        lambda: mesh.http.get("/health").json().get("upstream_errors") == reasons,
        10,
        "every down upstream's reason in /health",
    )
    r = mesh.call("missing.anything")
    assert r.status_code == 503
    assert (
        r.json()["error"]
        == "upstream unavailable: missing: command 'does-not-exist' not found on PATH"
    )
    servers = {s["name"]: s for s in mesh.http.get("/mcp-servers").json()}
    assert servers["crashing"]["error"] == reasons["crashing"] and "error" not in servers["fs"]
    health = subprocess.run(
        [sys.executable, "-m", "agent_mesh.mesh_cli", "health"],
        capture_output=True,
        text=True,
        env={**os.environ, "MESH_URL": mesh.url, "COLUMNS": "120"},
        timeout=30,
        check=False,
    )
    assert health.returncode == 1, health
    assert "command 'does-not-exist' not found on PATH" in health.stdout
    assert "exited with code 2: fatal: bad config" in health.stdout


def _mesh_health(mesh: Mesh) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh.mesh_cli", "health"],
        capture_output=True,
        text=True,
        env={**os.environ, "MESH_URL": mesh.url, "COLUMNS": "160"},
        timeout=30,
        check=False,
    )


def test_each_upstream_says_its_lifecycle_state(mesh: Mesh) -> None:
    def states() -> dict[str, Any]:
        found: dict[str, Any] = mesh.http.get("/health").json()["upstream_states"]
        return found

    waiting = ("backing_off", "failed")

    def settled() -> bool:
        now = states()
        fs = {i["state"] for i in now["fs"]["instances"]}
        return fs == {"up", "spare"} and all(  # its worker and the warm spare
            now[name]["state"] in waiting for name in ("missing", "crashing")
        )

    wait_until(settled, 20, "fs up with its spare, the servers that cannot start backing off")
    # From here on a retry may be under way in both processes at once (`starting`, the last
    # failure still its reason): a few milliseconds every 1, 2, 4... s.
    failing = (*waiting, "starting")
    now = states()
    assert now["fs"]["state"] == "up" and "reason" not in now["fs"]
    missing = now["missing"]
    assert missing["reason"] == "command 'does-not-exist' not found on PATH"
    assert missing["since"].endswith("Z")
    assert [i["instance"] for i in missing["instances"]] == ["missing:0", "missing:1"]
    for each in missing["instances"]:  # each waits, or retries in between
        assert each["failures"] >= 1 and ("retry_at" in each) == (each["state"] in waiting), each
    ready = mesh.http.get("/ready")
    assert ready.status_code == 503 and ready.json()["upstream_states"]["fs"]["state"] == "up"
    servers = {s["name"]: s["state"] for s in mesh.http.get("/mcp-servers").json()}
    assert servers["fs"] == "up" and servers["crashing"] in failing
    table = _mesh_health(mesh)
    assert table.returncode == 1, table
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert lines["fs"].split()[1:3] == ["upstream", "up"], table.stdout
    assert lines["missing"].split()[2] in failing, table.stdout
    assert lines["missing"].endswith("command 'does-not-exist' not found on PATH"), table.stdout
    assert lines["crashing"].endswith("exited with code 2: fatal: bad config"), table.stdout


def test_a_command_that_keeps_failing_backs_off_in_its_worker(mesh: Mesh) -> None:
    pids = set(mesh.role_pids("upstream --server missing"))  # its worker and warm spare
    log = mesh.state / "logs" / "upstream-missing-0.log"
    wait_until(lambda: "next start in 4s" in log.read_text(), 15, "the third failed start")
    text = log.read_text()
    assert (
        "missing: command 'does-not-exist' not found on PATH; next start in 1s (1 failed in a row)"
        in text
    )
    assert "next start in 2s (2 failed in a row)" in text
    assert (
        set(mesh.role_pids("upstream --server missing")) == pids
    )  # the same workers: no restart loop
    assert "Traceback" not in text and "Errno" not in text


def _transitions(
    sub: zmq.Socket[bytes], instance: str, until: set[str], seconds: float
) -> list[str]:
    """The states `instance` published (`upstream.<server>.<state>`) until one in `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while not seen or seen[-1] not in until:
        left = deadline - time.monotonic()
        assert left > 0 and sub.poll(int(left * 1000)), f"{instance}: saw only {seen}"
        topic, body = sub.recv_multipart()
        state = frames.unpack(body)
        if topic.startswith(b"upstream.") and state["instance"] == instance:
            seen.append(state["state"])
    return seen


def _subscribed(mesh: Mesh, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    """A subscriber to fs's lifecycle events, known to be live: a call's trace event came."""
    sub = ctx.socket(zmq.SUB)
    for prefix in (b"upstream.fs.", b"trace.probe."):
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    sub.connect(f"ipc://{StateDir(mesh.state).events_out_ipc}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert mesh.call("fs.list_allowed_directories", agent="probe").status_code == 200
        if sub.poll(200) and sub.recv_multipart()[0].startswith(b"trace.probe."):
            return sub
    raise AssertionError("no trace event reached the subscriber")


def test_a_killed_upstream_is_restarting_then_up_again(mesh: Mesh) -> None:
    def serving() -> dict[str, Any]:
        entry: dict[str, Any] = mesh.http.get("/health").json()["upstream_states"]["fs"]
        (fs,) = [i for i in entry["instances"] if i["state"] == "up"]
        return dict(fs)

    def up_for() -> float:
        return time.time() - datetime.fromisoformat(serving()["since"]).timestamp()

    # Killed after a healthy run it is started again at once (sooner, it would be backed off).
    wait_until(lambda: up_for() >= HEALTHY_RUN, HEALTHY_RUN + 10, "fs serving for a healthy run")
    victim = serving()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sub = _subscribed(mesh, ctx)
        (node,) = [p for p in descendants(victim["pid"]) if "node" in cmdline(p)][:1]
        os.kill(node, signal.SIGKILL)
        seen = _transitions(sub, victim["instance"], {"up", "spare"}, 20)
    finally:
        ctx.destroy(linger=0)
    # The spare took its slot meanwhile: it comes back as the spare (or serving, if it won).
    assert seen in (["restarting", "spare"], ["restarting", "up"]), seen

    def instances() -> dict[str, Any]:
        entry = mesh.http.get("/health").json()["upstream_states"]["fs"]
        return {i["instance"]: i for i in entry["instances"]} if entry["state"] == "up" else {}

    wait_until(
        lambda: instances().get(victim["instance"], {}).get("state") in ("up", "spare"),
        10,
        "fs up again",
    )
    assert instances()[victim["instance"]]["pid"] == victim["pid"]  # the same worker, a new server
