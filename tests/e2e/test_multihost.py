"""A server served only by a worker "on another host": `agent-mesh serve` with a `bus:` section
listens on tcp with CURVE, the config's `workers: 0` starts no local worker, and a separate
`agent-mesh run upstream --connect … --keys …` (its own AGENT_MESH_HOME, as on host B) serves the
tool calls and publishes the resource updates that reach a subscribed MCP session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from pydantic import TypeAdapter

from agent_mesh import keys as keys_cli
from bus.client import BusClient
from bus.endpoints import CurveClient
from tests.e2e.mesh import Mesh
from tests.support import REPO, free_port, npm_server, wait_until

RAW = TypeAdapter(dict[str, Any])


def _bus_up(health: dict[str, Any]) -> bool:
    """Every local role is up; the remote-only upstream may not be."""
    return health["bus"] == "up" and all(s["workers"] for s in health["services"].values())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    assert keys_cli.main(["--dir", str(directory), "--client", "host-b"]) == 0
    return directory


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[Mesh]:
    config = {
        "bus": {"listen": f"tcp://127.0.0.1:{free_port()}", "keys": str(keys)},
        "mcp_servers": [
            {
                "name": "everything",
                "command": npm_server("everything"),
                "args": ["stdio"],
                "workers": 0,
            }
        ],
        "policies": [{"name": "p", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config)
    for name in (
        "AGENT_MESH_KEYS",
        "AGENT_MESH_LISTEN",
    ):  # the config's `bus:` section, nothing else
        m.env.pop(name, None)
    m.start(ready=_bus_up)
    yield m
    assert m.stop() == set()


def _remote_worker(mesh: Mesh, keys: Path, host_b: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_MESH_KEYS", "AGENT_MESH_LISTEN")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_mesh",
            "run",
            "upstream",
            "--config",
            str(mesh.config_path),
            "--server",
            "everything",
            "--slot",
            "10",
            "--connect",
            mesh.config["bus"]["listen"],
            "--keys",
            str(keys / "clients" / "host-b"),
        ],
        env={**env, "AGENT_MESH_HOME": str(host_b), "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_bus_section_serves_tcp_and_a_remote_worker_serves_and_publishes(
    mesh: Mesh, keys: Path, tmp_path: Path
) -> None:
    # Without its remote worker the server is listed, down; calls get a clear 503.
    (server,) = mesh.http.get("/mcp-servers").json()
    assert (server["name"], server["status"], server["configured_workers"]) == (
        "everything",
        "error",
        0,
    )
    assert "upstream-everything" not in (mesh.state / "supervisord.conf").read_text()
    down = mesh.call("everything.echo", {"message": "hi"})
    assert down.status_code == 503 and "upstream unavailable: everything" in down.json()["error"], (
        down.text
    )
    # The broker serves tcp with CURVE, from the config alone: an authorised client gets in.
    async with BusClient(
        mesh.config["bus"]["listen"], curve=CurveClient.from_dir(keys / "clients" / "host-b")
    ) as far:
        assert "policy" in await far.request("mmi.services", {}, timeout=5)

    worker = _remote_worker(mesh, keys, tmp_path / "host-b")
    try:
        wait_until(
            lambda: mesh.http.get("/ready").status_code == 200, 30, "the remote worker registered"
        )
        (server,) = mesh.http.get("/mcp-servers").json()
        assert [w["slot"] for w in server["workers"]] == ["everything:10"]
        up = mesh.call("everything.echo", {"message": "hi"})
        assert up.status_code == 200 and "hi" in up.text, up.text

        updates: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates.append(str(message.params.uri))

        async with mesh.mcp("t", message_handler=on_message) as client:
            resources = client.server_capabilities.resources
            assert resources is not None and resources.subscribe
            uri = str((await client.list_resources()).resources[0].uri)
            # (raw: the SDK's subscribe_resource() warns it is deprecated, and warnings are errors
            # here)
            subscribe = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
            await client.session.send_request(subscribe, RAW)  # type: ignore[type-var]
            # server-everything then sends notifications/resources/updated every 5 s for subscribed
            # URIs: from the remote worker, as an EVENT over its tcp connection, to this session.
            await client.call_tool("everything.toggle-subscriber-updates", {})
            with anyio.fail_after(15):
                while uri not in updates:
                    await anyio.sleep(0.1)
            await client.call_tool("everything.toggle-subscriber-updates", {})
    finally:
        worker.terminate()
        output = worker.communicate(timeout=15)[0]
    assert "refused" not in output, output


def test_a_policy_worker_on_another_host_decides_with_the_reloaded_set(
    mesh: Mesh, keys: Path, tmp_path: Path
) -> None:
    import yaml

    listen = mesh.config["bus"]["listen"]
    deny_all = [{"name": "p", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]}]
    stale = tmp_path / "host-b.yaml"  # host B's copy of the config: old, it denies everything
    stale.write_text(yaml.safe_dump({**mesh.config, "policies": deny_all}))
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_MESH_KEYS", "AGENT_MESH_LISTEN")}
    env.update(AGENT_MESH_HOME=str(tmp_path / "host-b-policy"), PYTHONUNBUFFERED="1")
    policy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_mesh",
            "run",
            "policy",
            "--config",
            str(stale),
            "--slot",
            "7",
            "--connect",
            listen,
            "--keys",
            str(keys / "clients" / "host-b"),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    upstream = _remote_worker(mesh, keys, tmp_path / "host-b")
    supervisorctl = [
        sys.executable,
        "-m",
        "supervisor.supervisorctl",
        "-c",
        str(mesh.state / "supervisord.conf"),
    ]
    original = mesh.config_path.read_text()
    try:
        # Only host B's policy worker decides from now on.
        subprocess.run(
            [*supervisorctl, "stop", "policy"], check=True, capture_output=True, timeout=30
        )
        wait_until(
            lambda: (
                list(mesh.http.get("/health").json()["services"]["policy"]["served"])
                == ["policy:7"]
                and mesh.http.get("/ready").status_code == 200
            ),
            30,
            "host B's policy worker alone",
        )
        version = mesh.http.get("/health").json()["policy_set"]["version"]
        allowed = mesh.call("everything.echo", {"message": "hi"})  # the mesh's set allows: fetched
        assert allowed.status_code == 200, allowed.text
        traced = [
            t
            for t in mesh.http.get("/traces").json()
            if t["trace_id"] == allowed.json()["trace_id"]
        ]
        assert traced[0]["policy_version"] == version

        mesh.config_path.write_text(
            yaml.safe_dump(
                {
                    **mesh.config,
                    "policies": [
                        {
                            "name": "p",
                            "agent": "*",
                            "rules": [
                                {"tools": ["everything.echo"], "action": "deny"},
                                {"tools": ["*"], "action": "allow"},
                            ],
                        }
                    ],
                }
            )
        )
        reloaded = mesh.http.post("/reload").json()
        assert reloaded["status"] in ("reloaded", "unchanged") and reloaded["version"] != version, (
            reloaded
        )
        denied = mesh.call("everything.echo", {"message": "hi"})
        assert denied.status_code == 403 and "denied by policy p" in denied.json()["error"], (
            denied.text
        )
        assert mesh.http.get("/health").json()["services"]["policy"]["served"]["policy:7"] >= 2
    finally:
        mesh.config_path.write_text(original)
        mesh.http.post("/reload")
        subprocess.run(
            [*supervisorctl, "start", "policy"], check=False, capture_output=True, timeout=30
        )
        for proc in (policy, upstream):
            proc.terminate()
            proc.communicate(timeout=15)
