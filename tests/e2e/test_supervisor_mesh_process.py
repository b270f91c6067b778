"""Deployment configs 3 and 6: the supervisor keeps the mesh running (`mesh_process`).

Config 3: it starts the mesh, an external HTTP agent is governed, a kill -9 of the mesh's
supervisord gets the tree cleaned up and restarted, and the approval that was pending is still
decided. Config 6: with a mesh already started by Claude's `agent-mesh --mcp` connector the
supervisor attaches (one mesh, no port conflict, no restart loop), and the other way round."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client, StdioServerParameters

from bus.state_dir import running_pid
from mesh_config.file import load_config
from tests.autoresolve.fake_llm import FakeLlm
from tests.e2e.supervisor_proc import SupervisorProc
from tests.support import alive, cmdline, descendants, free_port, npm_server, wait_until


class Setup:
    """A mesh config (not started), its state dir, and a supervisor config managing it."""

    def __init__(self, tmp: Path, llm: FakeLlm) -> None:
        self.tmp, self.port = tmp, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.demo = tmp / "demo"
        self.demo.mkdir()
        self.home = tmp / "home"
        self.config_path = tmp / "mesh.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "port": self.port,
                    "grace_seconds": 1,
                    "trace_file": "traces.jsonl",
                    "supervisor": {"enabled": True},
                    "approval": {"timeout_seconds": 60, "memory_threshold": 0},
                    "mcp_servers": [
                        {
                            "name": "fs",
                            "command": npm_server("filesystem"),
                            "args": [str(self.demo)],
                        }
                    ],
                    "policies": [
                        {
                            "name": "agents",
                            "agent": "*",
                            "rules": [
                                {"tools": ["fs.list_directory"], "action": "allow"},
                                {
                                    "tools": ["fs.write_file", "fs.create_directory"],
                                    "action": "human_approval",
                                },
                            ],
                        }
                    ],
                }
            )
        )
        self.state = self.home / load_config(self.config_path).config_hash
        self.env = {"AGENT_MESH_HOME": str(self.home)}
        self.settings: dict[str, Any] = {
            "poll_interval": "100ms",
            "mesh_process": {
                "enabled": True,
                "command": f"{sys.executable} -m agent_mesh",
                "config": str(self.config_path),
                "health_interval": "200ms",
                "restart_backoff": "200ms",
            },
            "rules": [
                {
                    "name": "demo-writes",
                    "tools": ["fs.write_file"],
                    "condition": f"params.path starts_with {self.demo}",
                    "action": "approve",
                    "confidence": 0.9,
                }
            ],
            "llm": {"url": llm.url, "model": "qwen3:14b", "timeout": "10s"},
        }

    def supervisor(self) -> SupervisorProc:
        return SupervisorProc(self.tmp / "sv", self.settings, env=self.env)

    def mesh_pid(self) -> int | None:
        return running_pid(self.state)

    def call(self, tool: str, params: dict[str, Any], agent: str = "worker") -> httpx.Response:
        return httpx.post(
            f"{self.url}/tool/{tool}",
            json={"params": params},
            timeout=60,
            headers={"Authorization": f"Bearer agent:{agent}"},
        )

    def connector(self) -> Client:
        """Claude Code's side: `agent-mesh --mcp` over stdio, through the official SDK."""
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "agent_mesh", "--mcp", "--config", str(self.config_path)],
            env={**os.environ, **self.env},
            cwd=str(self.tmp),
        )
        return Client(params, mode="legacy")


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm()
    yield fake
    fake.close()


@pytest.fixture
def setup(tmp_path: Path, llm: FakeLlm) -> Iterator[Setup]:
    s = Setup(tmp_path, llm)
    yield s
    pid = s.mesh_pid()
    if pid is not None:  # a failed test must not leak a mesh
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 30, "leftover mesh stopped")


def approval(setup: Setup, approval_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{setup.url}/approvals/{approval_id}", timeout=10).json())


def pending(setup: Setup) -> list[dict[str, Any]]:
    body = httpx.get(f"{setup.url}/approvals", params={"status": "pending"}, timeout=10).json()
    return list(body if isinstance(body, list) else body["approvals"])


def test_config3_starts_restarts_after_kill9_and_pending_work_resumes(
    setup: Setup, llm: FakeLlm
) -> None:
    sv = setup.supervisor().start()
    try:
        sv.wait_log("is up at", timeout=60)
        first = setup.mesh_pid()
        assert first is not None and first in descendants(sv.proc.pid)  # type: ignore[union-attr]
        # An external HTTP agent, governed.
        assert setup.call("fs.list_directory", {"path": str(setup.demo)}).status_code == 200
        written = setup.call("fs.write_file", {"path": str(setup.demo / "a.txt"), "content": "a"})
        assert written.status_code == 200, written.text

        # A call the model decides slowly; the mesh is killed -9 while it thinks.
        llm.delay = 1.5
        llm.reply = json.dumps(
            {"decision": "approve", "confidence": 0.9, "reasoning": "a new directory"}
        )
        asked = len(llm.requests)
        target = str(setup.demo / "made-after-restart")
        ThreadPoolExecutor(1).submit(setup.call, "fs.create_directory", {"path": target})
        wait_until(
            lambda: any(a["tool"] == "fs.create_directory" for a in pending(setup)),
            10,
            "the approval",
        )
        (waiting,) = [a for a in pending(setup) if a["tool"] == "fs.create_directory"]
        wait_until(lambda: len(llm.requests) > asked, 10, "the supervisor to ask the model")
        tree = descendants(first) - {first}
        os.kill(first, signal.SIGKILL)

        sv.wait_log("; restarting it", timeout=10)
        wait_until(lambda: setup.mesh_pid() not in (None, first), 60, "a new mesh")
        sv.wait_log("is up at", count=2, timeout=60)
        assert not [pid for pid in tree if alive(pid)], (
            "processes of the killed mesh were left running"
        )
        # The approval survived in the mesh's state and the supervisor decided it after the restart.
        wait_until(
            lambda: approval(setup, waiting["id"]).get("status") == "approved",
            30,
            "the pending approval",
        )
        assert approval(setup, waiting["id"])["resolved_by"] == "supervisor:qwen3:14b"
        # New calls are governed by the new mesh.
        again = setup.call("fs.write_file", {"path": str(setup.demo / "b.txt"), "content": "b"})
        assert again.status_code == 200, again.text
        moved = setup.call(
            "fs.move_file", {"source": str(setup.demo / "a.txt"), "destination": "/tmp/x"}
        )
        assert moved.status_code == 403  # no rule allows it: denied by policy
        assert sv.count("mesh at") >= 1 and sv.count("unavailable (") == 1, sv.log()

        # kill -9 of the mesh's top process (`serve`, the supervisor's child): its supervisord and
        # workers are orphans now, still holding the port; they are stopped and a new mesh started.
        second = setup.mesh_pid()
        assert second is not None
        (serve,) = [p for p in descendants(sv.proc.pid) if "agent_mesh --config" in cmdline(p)]  # type: ignore[union-attr]
        tree = descendants(serve)
        os.kill(serve, signal.SIGKILL)
        sv.wait_log("is up at", count=3, timeout=90)
        assert setup.mesh_pid() not in (None, second)
        assert not [pid for pid in tree if alive(pid)], (
            "processes of the killed mesh were left running"
        )
        assert (
            setup.call(
                "fs.write_file", {"path": str(setup.demo / "c.txt"), "content": "c"}
            ).status_code
            == 200
        )
        mesh = setup.mesh_pid()
        mesh_tree = descendants(mesh) if mesh else set()
    finally:
        assert sv.stop() == 0, sv.log()
    # Stopping the supervisor stops the mesh it started, its whole tree.
    assert setup.mesh_pid() is None
    wait_until(lambda: not [pid for pid in mesh_tree if alive(pid)], 10, "the mesh's tree to exit")


async def test_config6_supervisor_attaches_to_the_mesh_claude_started(setup: Setup) -> None:
    async with setup.connector() as claude:
        mesh = setup.mesh_pid()
        assert mesh is not None
        sv = setup.supervisor().start()
        try:
            sv.wait_log("attached to the mesh already running")
            sv.wait_log("connected to the mesh at")
            assert descendants(sv.proc.pid) == set()  # type: ignore[union-attr]  # it started nothing
            result = await claude.call_tool(
                "fs.write_file", {"path": str(setup.demo / "c.txt"), "content": "c"}
            )
            assert not result.is_error, result
            assert (setup.demo / "c.txt").read_text() == "c"
            await asyncio.sleep(2)  # ten health checks: no second mesh, no restart
            assert setup.mesh_pid() == mesh
            assert "starting the mesh" not in sv.log() and "restarting" not in sv.log()
        except BaseException:
            sv.stop()
            raise
    # Claude left; the supervisor is still attached (a lease): the mesh stays past its grace.
    await asyncio.sleep(2)  # past grace_seconds (1): time passing is the case tested
    assert setup.mesh_pid() == mesh and alive(mesh)
    assert sv.stop() == 0, sv.log()
    wait_until(lambda: not alive(mesh), 30, "the embedded mesh to stop once nobody is attached")


async def test_config6_connector_attaches_to_the_supervisors_mesh(setup: Setup) -> None:
    sv = setup.supervisor().start()
    try:
        sv.wait_log("is up at", timeout=60)
        mesh = setup.mesh_pid()
        assert mesh is not None
        async with setup.connector() as claude:
            assert setup.mesh_pid() == mesh  # attached, not a second mesh
            path = str(setup.demo / "d.txt")
            result = await claude.call_tool("fs.write_file", {"path": path, "content": "d"})
            assert not result.is_error, result
            # The supervisor leaves; Claude is still attached: the mesh stays and serves it.
            assert sv.stop() == 0, sv.log()
            assert "leaving the mesh" in sv.log() and "1 attached client" in sv.log()
            await asyncio.sleep(2)  # past grace_seconds
            assert setup.mesh_pid() == mesh
            result = await claude.call_tool("fs.list_directory", {"path": str(setup.demo)})
            assert not result.is_error and "d.txt" in result.content[0].text  # type: ignore[union-attr]
    finally:
        sv.stop()
    # Claude left too: the mesh stops after its grace, like one started by `--mcp`.
    wait_until(lambda: not alive(mesh), 30, "the mesh to stop after its last client left")


def test_bad_mesh_config_is_one_line(setup: Setup) -> None:
    setup.settings["mesh_process"]["config"] = str(setup.tmp / "missing.yaml")
    result = setup.supervisor().command()
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "mesh_process.config" in result.stderr, (
        result.stderr
    )
    assert "file not found" in result.stderr
