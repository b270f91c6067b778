"""A real mesh for end-to-end tests: `agent-mesh serve` (supervisord and the whole process tree)
on a config written to a temp dir, a free port and a private AGENT_MESH_HOME. `running`: a
module's own mesh; `SharedMeshes`: one mesh for the modules that ask for the same fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.mcp_sdk import create_mcp_http_client
from tests.support import alive, cmdline, descendants, free_port, wait_until


class Mesh:
    def __init__(self, tmp: Path, config: dict[str, Any], *, file: Path | None = None) -> None:
        """`config` is written to tmp; or with `file`, that config file is used as it is (e.g. the
        shipped example) and the free port given with --port."""
        self.tmp = tmp
        self.port = free_port()
        self.config = {**config, "port": self.port}
        self.args: list[str] = []
        if file is None:
            self.config_path = tmp / "mesh.yaml"
            self.config_path.write_text(yaml.safe_dump(self.config))
        else:
            self.config_path, self.args = file, ["--port", str(self.port)]
        self.home = tmp / "home"
        self.env = {**os.environ, "AGENT_MESH_HOME": str(self.home)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready: Callable[[dict[str, Any]], bool] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(
        self,
        timeout: float = 30,
        ready: Callable[[dict[str, Any]], bool] | None = None,
        top_args: tuple[str, ...] = (),
    ) -> Mesh:
        """Start and wait until /ready says ok (or `ready(ready_json)` holds). `top_args`: options
        before the command (`agent-mesh --openapi SPEC serve ...`)."""
        self._ready = ready
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_mesh",
                *top_args,
                "serve",
                "--config",
                str(self.config_path),
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self.healthy, timeout, f"mesh ready at {self.url}", interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                "agent-mesh serve exited: "
                f"{self.proc.stdout.read().decode() if self.proc.stdout else ''}"
            )
        try:
            response = self.http.get("/ready")  # 503 until every role and upstream is up
        except httpx.HTTPError:
            return False
        if self._ready is not None:
            return self._ready(response.json())
        return response.status_code == 200

    @property
    def state(self) -> Path:
        (state,) = [p for p in self.home.iterdir() if p.is_dir()]
        return state

    def call(
        self,
        tool: str,
        params: dict[str, Any] | None = None,
        agent: str | None = "claude",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer agent:{agent}"} if agent else {}
        return self.http.post(
            f"/tool/{tool}", json={"params": params or {}}, headers={**auth, **(headers or {})}
        )

    @asynccontextmanager
    async def mcp(self, agent: str = "claude", **client_options: Any) -> AsyncIterator[Client]:
        """An official SDK MCP client on this mesh's Streamable HTTP `/mcp`, as `agent`."""
        http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{agent}"})
        async with (
            http,
            Client(
                streamable_http_client(f"{self.url}/mcp", http_client=http),
                mode="legacy",
                **client_options,
            ) as client,
        ):
            yield client

    def cli(
        self, *args: str, token: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The `mesh` CLI as the operator runs it, on this mesh (MESH_URL) in the environment the
        mesh was started in, with MESH_OPERATOR_TOKEN `token` when one is given."""
        env = {**self.env, "MESH_URL": self.url}
        if token is not None:
            env["MESH_OPERATOR_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "agent_mesh.mesh_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def processes(self) -> dict[int, str]:
        assert self.proc is not None
        return {pid: cmdline(pid) for pid in descendants(self.proc.pid)}

    def serving(self, server: str) -> set[int]:
        """Pids of `server`'s upstream workers that serve a slot (registered on the bus; the
        warm spare is an upstream process too, but serves none)."""
        servers = self.http.get("/mcp-servers").json()
        return {w["pid"] for s in servers if s["name"] == server for w in s["workers"]}

    def spare_warm(self, server: str) -> bool:
        """A live upstream process of `server` that serves no slot has its MCP server up and
        waits."""
        spares = {
            pid for pid in self.role_pids("upstream") if f"--server {server} " in cmdline(pid)
        }
        spares -= self.serving(server)
        return any(
            (self.state / "slots" / f"upstream-{server}.spare.{pid}").exists() for pid in spares
        )

    def role_pids(self, role: str) -> list[int]:
        return [pid for pid, cmd in self.processes().items() if f"agent_mesh run {role}" in cmd]

    def stop(self) -> set[int]:
        """SIGTERM like Ctrl-C; returns the pids of the tree that are still alive after it."""
        if self.proc is None or self.proc.poll() is not None:
            return set()
        tree = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.http.close()
        leftovers = {pid for pid in tree if alive(pid)}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        return leftovers


@contextmanager
def running(mesh: Mesh, **start: Any) -> Iterator[Mesh]:
    """`mesh` started (`Mesh.start`'s options), stopped after: nothing of its tree may outlive the
    stop. A module's mesh: `with running(Mesh(tmp, config)) as m: yield m`."""
    mesh.start(**start)
    try:
        yield mesh
    finally:
        leftovers = mesh.stop()
    assert leftovers == set(), f"processes left behind after SIGTERM: {leftovers}"


class SharedMeshes:
    """Meshes several modules share (a module split in two keeps its one mesh start). A
    module-scoped fixture in tests/e2e/conftest.py asks `use(request, make)`: the first module that
    asks starts the mesh `make()` gives, the last module of this run that uses the fixture stops it
    (as `running` does; whatever is still up at the end of the session is stopped too). Only for
    modules whose tests could as well be one module's: nothing in them restarts or reconfigures it.
    """

    def __init__(self) -> None:
        self._meshes: dict[str, Mesh] = {}

    @contextmanager
    def use(
        self, request: pytest.FixtureRequest, make: Callable[[], Mesh], **start: Any
    ) -> Iterator[Mesh]:
        name = request.fixturename
        assert name is not None
        if name not in self._meshes:
            self._meshes[name] = make().start(**start)
        try:
            yield self._meshes[name]
        finally:
            if not _used_after(request, name):
                self._stop(name)

    def close(self) -> None:
        for name in list(self._meshes):
            self._stop(name)

    def _stop(self, name: str) -> None:
        leftovers = self._meshes.pop(name).stop()
        assert leftovers == set(), f"processes left behind after SIGTERM: {leftovers}"


def _used_after(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether a test of this run after the requesting module's last one uses `fixture`."""
    items = request.session.items
    module = request.node
    last = max(i for i, item in enumerate(items) if item.getparent(pytest.Module) is module)
    return any(fixture in getattr(item, "fixturenames", ()) for item in items[last + 1 :])
