"""`transport: sse` and `transport: streamable_http` upstreams end to end: the real
server-everything in its `sse` and `streamableHttp` modes (behind a byte-for-byte TCP relay that
records what the mesh sent, to see the configured headers), tools listed and called through the
mesh; the server killed → calls answer 503 naming it and /health shows it backing off with the
reason; the server started again → calls served again, nothing restarted. Both upstreams are in
one mesh (one start for the module); each test runs once per transport, against its own server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
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
        self.spawn()
        self.wait()

    def spawn(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(NODE_BIN / "mcp-server-everything"), self.mode],
                env={**os.environ, "PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self) -> None:
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


# (transport, server-everything's mode, its endpoint path): one upstream of each in one mesh
TRANSPORTS = {"sse": ("sse", "/sse"), "streamable_http": ("streamableHttp", "/mcp")}


class Remote:
    """One remote upstream of the shared mesh: its server name, server-everything and relay."""

    def __init__(self, transport: str, tmp: Path) -> None:
        self.transport, self.name = transport, f"everything-{transport}"
        mode, self.path = TRANSPORTS[transport]
        self.server = Everything(mode, tmp)
        self.relay: Relay | None = None

    def config(self) -> dict[str, object]:
        assert self.relay is not None
        return {
            "name": self.name,
            "transport": self.transport,
            "url": f"http://127.0.0.1:{self.relay.port}{self.path}",
            "headers": {"Authorization": SECRET, "X-Mesh-Test": self.transport},
            "timeout_seconds": 10,
        }


@pytest.fixture(scope="module")
def remotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, dict[str, Remote]]]:
    """One mesh with both remote upstreams (one mesh start for the module): each test is run
    once per transport against its own server; the other stays up and serving beside it."""
    tmp = tmp_path_factory.mktemp("remote")
    remotes = {t: Remote(t, tmp) for t in TRANSPORTS}
    for r in remotes.values():
        r.server.spawn()
    for r in remotes.values():
        r.server.wait()
        r.relay = Relay(r.server.port)
    names = [r.name for r in remotes.values()]
    config = {
        "mcp_servers": [r.config() for r in remotes.values()],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {
                        "tools": [f"{n}.{tool}" for n in names for tool in ("echo", "get-sum")],
                        "action": "allow",
                    },
                    {"tools": [f"{n}.*" for n in names], "action": "deny"},
                ],
            }
        ],
    }
    mesh = Mesh(tmp, config).start(timeout=60)  # a busy machine: node + the SDK import
    try:
        yield mesh, remotes
    finally:
        for r in remotes.values():
            r.server.kill()
            if r.relay is not None:
                r.relay.listener.close()
        assert mesh.stop() == set()


@pytest.fixture(params=list(TRANSPORTS))
def remote(
    request: pytest.FixtureRequest, remotes: tuple[Mesh, dict[str, Remote]]
) -> tuple[Mesh, Remote]:
    mesh, by_transport = remotes
    return mesh, by_transport[request.param]


def echo(mesh: Mesh, server: str, text: str = "hi") -> httpx.Response:
    return mesh.call(f"{server}.echo", {"message": text})


def test_tools_calls_and_headers(remote: tuple[Mesh, Remote]) -> None:
    mesh, r = remote
    tools = {t["name"] for t in mesh.http.get("/tools").json()}
    assert {f"{r.name}.{t}" for t in ("echo", "get-sum", "get-tiny-image")} <= tools
    response = echo(mesh, r.name, "over the network")
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "Echo: over the network"
    summed = mesh.call(f"{r.name}.get-sum", {"a": 2, "b": 40})
    assert summed.status_code == 200 and "42" in summed.text, summed.text
    denied = mesh.call(f"{r.name}.get-env", {})
    assert denied.status_code == 403  # governed like any upstream
    assert r.relay is not None
    seen = r.relay.headers_seen()  # this server's relay: only what was sent to this server
    assert f"authorization: {SECRET.lower()}" in seen and f"x-mesh-test: {r.transport}" in seen


def test_down_is_a_clear_503_and_back_up_serves_again(
    remote: tuple[Mesh, Remote], remotes: tuple[Mesh, dict[str, Remote]]
) -> None:
    mesh, r = remote
    assert r.relay is not None
    relay = r.relay
    (other,) = [o.name for o in remotes[1].values() if o is not r]
    workers = set(mesh.role_pids("upstream"))  # both servers' workers and their warm spares
    r.server.kill()

    seen: list[str] = []

    def refused_saying_why() -> bool:
        # 503 at once; the cause is in it from the first failed reconnection attempt on
        response = echo(mesh, r.name)
        seen.append(f"{response.status_code} {response.json().get('error')}")
        # (through the relay: it accepts, then closes since the server is gone)
        return response.status_code == 503 and f":{relay.port}/" in seen[-1]

    try:
        wait_until(refused_saying_why, 20, "calls refused with the cause while the server is down")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answers: {seen[-3:]}") from None
    body = echo(mesh, r.name).json()
    assert body["error"].startswith(f"upstream unavailable: {r.name}"), body
    health = mesh.http.get("/health").json()
    assert health["status"] == "degraded" and health["upstreams"][r.name] != "up", health
    reason = health.get("upstream_errors", {}).get(r.name, "")
    assert f":{relay.port}/" in str(reason), health
    assert mesh.http.get("/ready").status_code == 503
    assert health["upstreams"][other] == "up", health  # one server down: the other serves on
    assert echo(mesh, other).status_code == 200

    r.server.start()
    wait_until(lambda: echo(mesh, r.name).status_code == 200, BACK_DEADLINE, "served again")
    assert mesh.http.get("/health").json()["upstreams"][r.name] == "up"
    assert set(mesh.role_pids("upstream")) == workers  # the same workers reconnected: no restart
