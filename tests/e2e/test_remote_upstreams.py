"""`transport: sse` and `transport: streamable_http` upstreams end to end: the real
server-everything in its `sse` and `streamableHttp` modes (behind a byte-for-byte TCP relay that
records what the mesh sent, to see the configured headers), tools listed and called through the
mesh; the server killed → calls answer 503 naming it and /health shows it backing off with the
reason; the server started again → calls served again, nothing restarted."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mesh import Mesh
from tests.support import NODE_BIN, free_port, wait_until

SECRET = "Bearer remote-secret-42"
BACK_DEADLINE = 45.0  # s: the worker backs off 1, 2, 4, 8 s... between attempts (cap 30 s)


class Relay:
    """A TCP relay to `target`: every byte passed both ways, what came from the mesh recorded."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()  # the server is down: so is the relay's far side
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def headers_seen(self) -> str:
        with self.lock:
            return self.sent.decode(errors="replace").lower()


class Everything:
    """server-everything in one of its HTTP modes, on a fixed port (kill and start again)."""

    def __init__(self, mode: str, tmp: Path) -> None:
        self.mode, self.port, self.log = mode, free_port(), tmp / f"everything-{mode}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(NODE_BIN / "mcp-server-everything"), self.mode],
                env={**os.environ, "PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.listening, 20, f"server-everything {self.mode} on port {self.port}")

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            self.proc = None


@pytest.fixture(
    scope="module",
    params=[("sse", "sse", "/sse"), ("streamable_http", "streamableHttp", "/mcp")],
    ids=["sse", "streamable_http"],
)
def remote(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mesh, Everything, Relay]]:
    transport, mode, path = request.param
    tmp = tmp_path_factory.mktemp(transport)
    server = Everything(mode, tmp)
    server.start()
    relay = Relay(server.port)
    config = {
        "mcp_servers": [
            {
                "name": "everything",
                "transport": transport,
                "url": f"http://127.0.0.1:{relay.port}{path}",
                "headers": {"Authorization": SECRET, "X-Mesh-Test": transport},
                "timeout_seconds": 10,
            }
        ],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["everything.echo", "everything.get-sum"], "action": "allow"},
                    {"tools": ["everything.*"], "action": "deny"},
                ],
            }
        ],
    }
    mesh = Mesh(tmp, config).start(timeout=60)  # a busy machine: node + the SDK import
    try:
        yield mesh, server, relay
    finally:
        server.kill()
        relay.listener.close()
        assert mesh.stop() == set()


def echo(mesh: Mesh, text: str = "hi") -> object:
    return mesh.call("everything.echo", {"message": text})


def test_tools_calls_and_headers(remote: tuple[Mesh, Everything, Relay]) -> None:
    mesh, _server, relay = remote
    tools = {t["name"] for t in mesh.http.get("/tools").json()}
    assert {"everything.echo", "everything.get-sum", "everything.get-tiny-image"} <= tools
    response = echo(mesh, "over the network")
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    assert response.json()["result"]["content"][0]["text"] == "Echo: over the network"  # type: ignore[attr-defined]
    summed = mesh.call("everything.get-sum", {"a": 2, "b": 40})
    assert summed.status_code == 200 and "42" in summed.text, summed.text
    denied = mesh.call("everything.get-env", {})
    assert denied.status_code == 403  # governed like any upstream
    seen = relay.headers_seen()
    assert f"authorization: {SECRET.lower()}" in seen and "x-mesh-test: " in seen


def test_down_is_a_clear_503_and_back_up_serves_again(
    remote: tuple[Mesh, Everything, Relay],
) -> None:
    mesh, server, relay = remote
    workers = set(mesh.role_pids("upstream"))  # the worker and its warm spare
    server.kill()

    seen: list[str] = []

    def refused_saying_why() -> bool:
        # 503 at once; the cause is in it from the first failed reconnection attempt on
        r = echo(mesh)
        seen.append(f"{r.status_code} {r.json().get('error')}")  # type: ignore[attr-defined]
        # (through the relay: it accepts, then closes since the server is gone)
        return r.status_code == 503 and f":{relay.port}/" in seen[-1]  # type: ignore[attr-defined]

    try:
        wait_until(refused_saying_why, 20, "calls refused with the cause while the server is down")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answers: {seen[-3:]}") from None
    body = echo(mesh).json()  # type: ignore[attr-defined]
    assert body["error"].startswith("upstream unavailable: everything"), body
    health = mesh.http.get("/health").json()
    assert health["status"] == "degraded" and health["upstreams"]["everything"] != "up", health
    reason = health.get("upstream_errors", {}).get("everything", "")
    assert f":{relay.port}/" in str(reason), health
    assert mesh.http.get("/ready").status_code == 503

    server.start()
    wait_until(lambda: echo(mesh).status_code == 200, BACK_DEADLINE, "served again")  # type: ignore[attr-defined]
    assert mesh.http.get("/health").json()["upstreams"]["everything"] == "up"
    assert set(mesh.role_pids("upstream")) == workers  # the same workers reconnected: no restart
