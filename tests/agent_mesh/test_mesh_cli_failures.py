"""`mesh` through its real entry point, without a mesh: what a user gets when MESH_URL is wrong
(nothing there, not an agent-mesh) or the command needs a terminal — one line, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support import free_port


def mesh(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh.mesh_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MESH_URL": url},
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line


@pytest.fixture
def not_a_mesh(tmp_path: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "command",
    [
        ["health"],
        ["traces"],
        ["pending"],
        ["grants"],
        ["show", "abcd1234"],
        ["approve", "abcd1234"],
        ["revoke", "abcd1234"],
        ["grant", "claude", "fs.*", "--for", "5m"],
        ["tools"],
        ["servers"],
    ],
)
def test_nothing_listening(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert one_line(mesh(*command, url=url)) == (
        f"mesh {command[0]}: cannot reach {url}: connection refused; is the mesh running? (set "
        "MESH_URL or --url)"
    )


def test_not_an_agent_mesh(not_a_mesh: str) -> None:
    line = one_line(mesh("traces", url=not_a_mesh))
    assert line == (
        f"mesh traces: GET /traces: HTTP 404 without a JSON body: is {not_a_mesh} an agent-mesh? "
        "(set MESH_URL or --url)"
    )


def test_a_url_without_scheme_is_taken_as_http() -> None:
    port = free_port()
    assert f"cannot reach http://127.0.0.1:{port}:" in one_line(
        mesh("health", url=f"127.0.0.1:{port}")
    )


def test_watch_needs_a_terminal() -> None:
    line = one_line(mesh("watch", url=f"http://127.0.0.1:{free_port()}"))
    assert line == "mesh watch: needs a terminal (use `mesh pending` in scripts)"


def test_watch_waits_for_a_mesh_that_does_not_answer() -> None:
    """In a terminal, `mesh watch` shows that the mesh does not answer and keeps trying; q quits."""
    import pty
    import select
    import time

    url = f"http://127.0.0.1:{free_port()}"
    pid, fd = pty.fork()
    if pid == 0:  # the child: mesh watch on the pty
        os.environ.update(MESH_URL=url, COLUMNS="200")
        os.execv(sys.executable, [sys.executable, "-m", "agent_mesh.mesh_cli", "watch"])
    screen = b""
    try:
        end = time.monotonic() + 20
        while (
            screen.count(b"(retrying)") < 2 and time.monotonic() < end
        ):  # drawn again: still trying
            if select.select([fd], [], [], 0.2)[0]:
                screen += os.read(fd, 65536)
        assert screen.count(b"(retrying)") >= 2, screen[-400:]
        assert f"cannot reach {url}: connection refused".encode() in screen
        assert b"Traceback" not in screen
        os.write(fd, b"q")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
