"""`agent-mesh --mcp` starting its mesh (cold), as Claude Code runs it: the session starts saying
why a server that cannot start is down (tests/gateway/test_stdio_wait.py: without waiting for
it), and nothing warns
about failed requests when none failed ("broker silent" was logged on every cold start after the
first: the connector polled before the new broker was up)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from bus.state_dir import running_pid
from mesh_config.file import load_config
from tests.support import free_port, npm_server, wait_until

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def _session(config: Path, env: dict[str, str]) -> str:
    """One cold --mcp session (initialize answered, then the client leaves): its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "--mcp", "--config", str(config)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no answer to initialize"
        answer = json.loads(proc.stdout.readline())
        assert answer["id"] == 1 and "result" in answer, answer
        proc.stdin.close()  # the client leaves
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.stderr.read().decode()


def test_cold_starts_do_not_wait_for_a_failed_upstream_nor_warn_about_nothing(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": free_port(),
                "grace_seconds": 1,
                "mcp_servers": [
                    {"name": "fs", "command": npm_server("filesystem"), "args": [str(tmp_path)]},
                    {"name": "missing", "command": "does-not-exist"},
                ],
                "policies": [
                    {"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}
                ],
            }
        )
    )
    env = {**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home")}
    state = tmp_path / "home" / load_config(config).config_hash
    for _ in range(2):  # the second start finds the first mesh's sockets in the state directory
        stderr = _session(config, env)
        assert "broker silent" not in stderr, stderr
        assert "missing (command 'does-not-exist' not found on PATH)" in stderr, stderr
        wait_until(lambda: running_pid(state) is None, 30, "the mesh to stop after its last client")


def test_a_session_whose_mesh_stops_ends_saying_so(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": free_port(),
                "mcp_servers": [
                    {"name": "fs", "command": npm_server("filesystem"), "args": [str(tmp_path)]}
                ],
            }
        )
    )
    env = {**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home")}
    state = tmp_path / "home" / load_config(config).config_hash
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "--mcp", "--config", str(config)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and json.loads(proc.stdout.readline())["id"] == 1
        pid = running_pid(state)
        assert pid is not None
        os.kill(
            pid, signal.SIGTERM
        )  # the mesh goes away under the session (stopped, or a role given up)
        assert proc.wait(timeout=45) == 1  # (after MESH_GONE: a restart would have been waited for)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = proc.stderr.read().decode().splitlines()
    assert (
        lines[-1]
        == f"agent-mesh: the mesh for {config} stopped; restart this MCP server to start it again"
    )
    assert not any("Traceback" in line for line in lines)


def test_the_reason_a_mesh_gave_up_is_read_from_its_start_log(tmp_path: Path) -> None:
    from gateway.stdio import _stop_reason

    log = tmp_path / "embedded-start.log"
    assert _stop_reason(log) == ""
    log.write_text(
        "agent-mesh: serving c.yaml on http://127.0.0.1:9090\n"
        "agent-mesh: gateway could not be kept running: gateway: port 9090 is in use (log: x)\n"
        "agent-mesh: stopping the mesh\n"
    )
    assert (
        _stop_reason(log)
        == "gateway could not be kept running: gateway: port 9090 is in use (log: x)"
    )
    with log.open("a") as more:  # a later start of the same mesh, stopped normally
        more.write("agent-mesh: serving c.yaml on http://127.0.0.1:9090\n")
    assert _stop_reason(log) == ""
