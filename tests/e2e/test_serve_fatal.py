"""`agent-mesh serve` watches its tree: a gateway that cannot listen (the port was taken after
serve checked it) is given up by supervisord (FATAL, no restart loop), and serve says why, stops
the tree and exits non-zero."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support import alive, cmdline, descendants, free_port, npm_server, wait_until

GIVE_UP = 60.0  # s: 4 starts of a gateway under load plus supervisord's 1 + 2 + 3 s of backoff


def test_gateway_that_cannot_listen_stops_serve_with_the_reason(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(yaml.safe_dump({"port": port, "mcp_servers": []}))
    # Bound but not listening: serve's own check passes; listening once serve is past it makes
    # the gateway's bind fail, as when another program takes the port in between.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    serve = subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "serve", "--config", str(config)],
        env={**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home")},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stderr is not None
    lines: list[str] = []
    started = time.monotonic()
    try:
        for line in serve.stderr:  # until serve exits (pytest's timeout guards against a loop)
            lines.append(line.rstrip("\n"))
            if line.startswith("agent-mesh: serving"):
                holder.listen()
                started = time.monotonic()
        assert serve.wait(timeout=10) == 1
    finally:
        holder.close()
        if serve.poll() is None:
            serve.kill()
    assert time.monotonic() - started < GIVE_UP
    fatal = [line for line in lines if "could not be kept running" in line]
    assert fatal, lines
    assert fatal[0].startswith(
        f"agent-mesh: gateway could not be kept running: gateway: port {port} is in use "
        f"(by pid {os.getpid()}"
    )
    assert f"set port: in {config} or --port (log: " in fatal[0]
    assert lines[-1] == "agent-mesh: stopping the mesh"
    log = next((tmp_path / "home").rglob("supervisord.log")).read_text()
    assert "gateway entered FATAL state" in log
    leftovers = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if str(config) in cmdline(pid) and alive(pid)
    ]
    assert leftovers == [], "the tree outlived serve"


def test_a_killed_supervisord_takes_its_tree_with_it(tmp_path: Path) -> None:
    # The OOM killer, or a kill -9 of the wrong pid: serve must not leave the processes of the
    # tree serving on its port (the next serve would say the port is in use by our own gateway).
    port = free_port()
    demo = tmp_path / "demo"
    demo.mkdir()
    config = tmp_path / "mesh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": port,
                "mcp_servers": [
                    {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}
                ],
            }
        )
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "serve", "--config", str(config)],
        env={**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home")},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stderr is not None
    tree: set[int] = set()
    try:
        # Every role and both upstream servers (worker and warm spare) are up.
        wait_until(
            lambda: sum("mcp-server-filesystem" in cmdline(p) for p in descendants(serve.pid)) == 2,
            60,
            "the tree with its two filesystem servers",
        )
        pidfile = next((tmp_path / "home").rglob("supervisord.pid"))
        supervisord = int(pidfile.read_text().strip())
        tree = descendants(serve.pid) - {supervisord}
        os.kill(supervisord, signal.SIGKILL)
        assert serve.wait(timeout=30) == 1
        lines = serve.stderr.read().splitlines()
    finally:
        if serve.poll() is None:
            serve.kill()
        for pid in tree:  # (only if the test failed)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert lines[-1] == (
        f"agent-mesh: supervisord (pid {supervisord}) was killed by SIGKILL: "
        f"stopped the {len(tree)} processes it left"
    )
    assert not [p for p in tree if alive(p)]
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
