"""A real mesh for the benchmarks: `python -m agent_mesh serve` (it execs supervisord) on a
temp config and AGENT_MESH_HOME, with server-everything as upstream `everything` and a policy
that allows the benchmark's agent; its process tree, for CPU time; a stop that reports any
process outliving supervisord."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from bench_conn import AGENT

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from agent_mesh.proctree import alive, cmdline, descendants

EVERYTHING = REPO / "node_modules" / ".bin" / "mcp-server-everything"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MeshProcess:
    """`python -m agent_mesh serve` (it execs supervisord) on a temp config and AGENT_MESH_HOME."""

    def __init__(
        self,
        tmp: Path,
        policy_workers: int,
        upstream_workers: int,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.port = free_port()
        self.home = tmp / "home"
        self.output = tmp / "serve.out"
        self.config_path = tmp / "mesh.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "port": self.port,
                    "policy_workers": policy_workers,
                    "mcp_servers": [
                        {
                            "name": "everything",
                            "transport": "stdio",
                            "args": ["stdio"],
                            "command": str(EVERYTHING),
                            "workers": upstream_workers,
                        }
                    ],
                    "policies": [
                        {
                            "name": AGENT,
                            "agent": AGENT,
                            "rules": [{"tools": ["everything.*"], "action": "allow"}],
                        }
                    ],
                    **(extra or {}),
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent_mesh", "serve", "--config", str(self.config_path)],
                env={**os.environ, "AGENT_MESH_HOME": str(self.home)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent-mesh serve exited: {self.output.read_text()}")
            url = f"http://127.0.0.1:{self.port}/ready"  # 503 until every role and upstream is up
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
                self._settle(deadline)
                return  # urlopen raises on a non-2xx status
            time.sleep(0.2)
        raise RuntimeError(f"mesh not ready after {timeout}s; see {self.home}")

    def _settle(self, deadline: float) -> None:
        """Wait until the gateway has built /mcp: it does so after /ready, in a thread
        (gateway/mcp_deferred.py, ~2 s of CPU importing the MCP SDK), and a measurement that
        starts meanwhile counts that import as the calls' CPU and its GIL in their latency. A
        request to /mcp is answered once it is built (here a 4xx: no session)."""
        url = f"http://127.0.0.1:{self.port}/mcp"
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=max(1.0, deadline - time.monotonic())).close()

    def tree(self) -> set[int]:
        return set() if self.proc is None else {self.proc.pid} | descendants(self.proc.pid)

    def stop(self, grace: float = 5.0) -> list[str]:
        """SIGTERM supervisord and wait; orphans get `grace` s more, then SIGKILL.

        Returns a line per process of the tree that outlived supervisord."""
        if self.proc is None:
            return []
        names = {pid: cmdline(pid) for pid in self.tree() - {self.proc.pid}}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        t0 = time.monotonic()
        pending = {pid for pid in names if alive(pid)}
        report = []
        while pending and time.monotonic() - t0 < grace:
            for pid in [p for p in pending if not alive(p)]:
                report.append(
                    f"pid {pid} exited {time.monotonic() - t0:.2f}s after supervisord: {names[pid]}"
                )
                pending.discard(pid)
            time.sleep(0.01)
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            report.append(
                f"pid {pid} still alive {grace}s after supervisord, SIGKILLed: {names[pid]}"
            )
        return report
