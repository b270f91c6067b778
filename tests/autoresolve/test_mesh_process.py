"""mesh_process without a real mesh: attaching to any mesh that answers /health (the Go binary
too) without starting one, backoff between failed starts (no tight crash loop), and one-line
errors for a command that cannot run. The real thing: tests/e2e/test_supervisor_mesh_process.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autoresolve.config import Loaded, Settings
from autoresolve.mesh_api import MeshApi
from autoresolve.mesh_process import MeshProcess, MeshProcessError
from tests.support import free_port


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path / "home"))


def process(tmp_path: Path, port: int, **mesh_process: Any) -> MeshProcess:
    (tmp_path / "mesh.yaml").write_text(f"port: {port}\n")
    settings = Settings.model_validate(
        {
            "mesh_process": {
                "enabled": True,
                "config": str(tmp_path / "mesh.yaml"),
                "health_interval": "50ms",
                "restart_backoff": "100ms",
                "restart_backoff_max": "400ms",
                "start_timeout": "2s",
            }
            | mesh_process
        }
    )
    return MeshProcess(Loaded(settings, tmp_path / "s.yaml"), MeshApi(f"http://127.0.0.1:{port}"))


class _GoHealth(BaseHTTPRequestHandler):
    """GET /health like the Go binary: always 200 with a status."""

    def do_GET(self) -> None:
        body = b'{"status": "ok", "tools": 3, "traces": 0, "version": "0.8.6"}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def go_mesh() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GoHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


async def test_attaches_to_a_mesh_that_answers_without_starting_one(
    tmp_path: Path, go_mesh: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "autoresolve")
    mesh = process(tmp_path, go_mesh, command=str(tmp_path / "must-not-run"))
    stop = asyncio.Event()
    await mesh.ensure(stop)
    watching = asyncio.create_task(mesh.watch(stop))
    await asyncio.sleep(0.5)  # ten health checks
    stop.set()
    await watching
    await mesh.close()
    assert mesh.proc is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("attached to the mesh already running" in m for m in messages) == 1
    assert not any(m.startswith("starting the mesh") for m in messages)


async def test_failed_starts_back_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "autoresolve")
    mesh = process(tmp_path, free_port(), command="sh -c 'exit 3' --")
    stop = asyncio.Event()
    ensuring = asyncio.create_task(mesh.ensure(stop))

    def starts() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("starting the mesh")]

    deadline = time.monotonic() + 10
    while len(starts()) < 5:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        await asyncio.sleep(0.01)
    stop.set()
    await ensuring
    await mesh.close()
    exits = [r for r in caplog.records if "exited with status 3 while starting" in r.getMessage()]
    assert len(exits) >= len(starts()) - 1
    # 0.1 s, 0.2 s, then 0.4 s (the maximum) between starts: not hundreds in a second
    gaps = [b.created - a.created for a, b in itertools.pairwise(starts())]
    assert all(gap >= 0.09 for gap in gaps) and max(gaps) >= 0.35


async def test_a_command_that_cannot_run_is_one_clear_error(tmp_path: Path) -> None:
    mesh = process(tmp_path, free_port(), command=str(tmp_path / "no-such-agent-mesh"))
    with pytest.raises(
        MeshProcessError, match="mesh_process.command: cannot run .*no-such-agent-mesh.*"
    ):
        await mesh.ensure(asyncio.Event())
    await mesh.close()


def test_an_invalid_mesh_config_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text("port: 9090\nportt: 1\n")
    settings = Settings.model_validate(
        {"mesh_process": {"enabled": True, "config": str(tmp_path / "mesh.yaml")}}
    )
    with pytest.raises(MeshProcessError, match=r"mesh_process.config: .*portt: unknown key"):
        MeshProcess(Loaded(settings, tmp_path / "s.yaml"), MeshApi("http://127.0.0.1:1"))


async def test_a_mesh_attached_by_health_only_gets_unhealthy_after_checks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "autoresolve")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GoHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])
    mesh = process(tmp_path, port, command=str(tmp_path / "no-such-agent-mesh"), unhealthy_after=6)
    stop = asyncio.Event()
    await mesh.ensure(stop)
    server.shutdown()
    server.server_close()
    watching = asyncio.create_task(mesh.watch(stop))
    await asyncio.sleep(0.15)  # a few unanswered checks: maybe busy, not gone
    assert not watching.done()
    assert not any("gone" in r.getMessage() for r in caplog.records)
    # after unhealthy_after of them it is gone: start our own (here a command that cannot run)
    with pytest.raises(MeshProcessError, match="cannot run"):
        await asyncio.wait_for(watching, 5)
    assert any("the mesh we attached to is gone" in r.getMessage() for r in caplog.records)
    await mesh.close()
