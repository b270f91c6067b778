"""What each role's process loads (issue 12, the idle tree's memory): the broker runs as an image
of its own (agent_mesh/broker_main.py), and roles load only what they use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.frames import UNAVAILABLE
from mesh_config.file import load_config

REPO = Path(__file__).resolve().parents[2]


def _loaded_modules(*modules: str) -> set[str]:
    """The modules (and their top-level packages) a fresh interpreter has after importing these."""
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    names = set(out.stdout.split())
    return names | {name.split(".")[0] for name in names}


def test_broker_image_loads_neither_pydantic_nor_asyncio() -> None:
    loaded = _loaded_modules("agent_mesh.broker_main", "bus.broker")
    heavy = {"pydantic", "asyncio", "uvloop", "yaml", "mesh_config", "importlib.metadata"}
    assert not loaded & heavy, loaded & heavy


@pytest.mark.parametrize(
    "modules",
    [
        ("agent_mesh.roles", "workers.policy"),
        ("agent_mesh.roles", "workers.tracer"),
        ("agent_mesh.roles", "workers.approval"),
        ("agent_mesh.roles", "workers.upstream_run"),
    ],
)
def test_workers_load_no_http_stack(modules: tuple[str, ...]) -> None:
    """The MCP SDK, Starlette, uvicorn and httpx are the gateway's (a remote upstream's worker
    and the approval service's webhooks import an HTTP client when they need one)."""
    http = {"mcp", "starlette", "uvicorn", "httpx", "httpx2", "cryptography"}
    assert not _loaded_modules(*modules) & http


async def test_broker_serves_from_its_own_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agent-mesh run broker` checks its settings, then becomes the lean image: same pid, same
    command line, routing requests, without pydantic or asyncio mapped in."""
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path / "home"))
    config = tmp_path / "c.yaml"
    config.write_text("policy_workers: 1\n")
    endpoints = Endpoints.in_dir(load_config(config).state_dir())
    command = [sys.executable, "-m", "agent_mesh", "run", "broker", "--config", str(config)]
    proc = await asyncio.create_subprocess_exec(*command, cwd=REPO, stderr=subprocess.PIPE)
    try:
        socket_file = Path(endpoints.requests.removeprefix("ipc://"))
        deadline = time.monotonic() + 30
        while not socket_file.exists():
            assert proc.returncode is None, await proc.communicate()
            assert time.monotonic() < deadline, "the broker did not bind its socket"
            await asyncio.sleep(0.05)
        async with BusClient(endpoints.requests) as client:
            with pytest.raises(BusError) as err:
                await client.request("nobody", {}, timeout=5)
        assert err.value.code == UNAVAILABLE, err.value
        assert proc.returncode is None
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0")[:-1]
        assert cmdline[1:] == command[1:]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic_core" not in maps and "_asyncio" not in maps
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 10)
