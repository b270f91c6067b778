"""Failure paths with the real tree: upstreams that cannot start (each says why, and is retried
with a back-off, not in a loop), approval not built yet."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mesh import Mesh
from tests.support import npm_server, wait_until


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
    m.start(ready=lambda health: health["upstreams"].get("fs") == "up")
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
