"""Live policy reload under a running mesh (supervisord, 2 policy workers, the real filesystem
server): a changed policy file decides the next call within a deadline; an invalid one leaves
the old rules in force and says why in /health, `mesh health`, `mesh reload` and the log; SIGHUP
and `mesh reload` reload without restarting anything; traces name the version that decided;
rate-limit windows and calls waiting for approval survive a reload; an mcp_servers change is
reported as needing a restart."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.mesh import Mesh
from tests.support import npm_server, wait_until

DEADLINE = 10.0  # s from a saved file to the new rules deciding (debounce 0.3 s + load + fetch)
AGENTS = [f"agent-{i}" for i in range(6)]  # spread over both policy workers by affinity


def rules(action: str, extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        name: team
        agent: "agent-*"
        rules:
          - tools: ["filesystem.list_directory"]
            action: {action}
            condition: {{field: params.path, operator: within, value: {{DATA}}}}
          - tools: ["filesystem.write_file"]
            action: human_approval
        """)
        + extra
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("reload")
    data = tmp / "data"
    data.mkdir()
    (tmp / "policies").mkdir()
    config = {
        "policy_workers": 2,
        "policy_dir": "policies",
        "mcp_servers": [
            {"name": "filesystem", "command": npm_server("filesystem"), "args": [str(data)]}
        ],
        "policies": [
            {
                "name": "bots",
                "agent": "bot",
                "rate_limit": {"max_per_minute": 2},
                "rules": [{"tools": ["filesystem.list_*"], "action": "allow"}],
            },
        ],
        "approval": {"timeout_seconds": 60},
    }
    m = Mesh(tmp, config)
    m.data = data  # type: ignore[attr-defined]
    write_policy(m, rules("allow"))
    m.start()
    yield m
    assert m.stop() == set()


def write_policy(mesh: Mesh, text: str) -> None:
    path = mesh.tmp / "policies" / "team.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text.replace("{DATA}", str(mesh.data)))  # type: ignore[attr-defined]
    os.replace(tmp, path)  # as editors save: a new file in place


def policy_set(mesh: Mesh) -> dict[str, Any]:
    result: dict[str, Any] = mesh.http.get("/health").json()["policy_set"]
    return result


def list_status(mesh: Mesh, agent: str = "agent-0") -> int:
    return mesh.call("filesystem.list_directory", {"path": str(mesh.data)}, agent=agent).status_code  # type: ignore[attr-defined]


def trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    found = [
        t
        for t in mesh.http.get("/traces", params={"limit": 200}).json()
        if t["trace_id"] == trace_id
    ]
    assert found, trace_id
    return dict(found[0])


def test_a_changed_file_decides_the_next_call_and_an_invalid_one_changes_nothing(
    mesh: Mesh,
) -> None:
    first = policy_set(mesh)
    assert first.get("error") is None
    allowed = mesh.call("filesystem.list_directory", {"path": str(mesh.data)}, agent="agent-0")  # type: ignore[attr-defined]
    assert allowed.status_code == 200, allowed.text
    assert trace(mesh, allowed.json()["trace_id"])["policy_version"] == first["version"]

    write_policy(mesh, rules("deny"))
    wait_until(
        lambda: all(list_status(mesh, a) == 403 for a in AGENTS), DEADLINE, "the new rules deciding"
    )
    second = policy_set(mesh)
    assert second["generation"] == first["generation"] + 1 and second["version"] != first["version"]
    denied = mesh.call("filesystem.list_directory", {"path": str(mesh.data)}, agent="agent-3")  # type: ignore[attr-defined]
    assert denied.status_code == 403
    assert trace(mesh, denied.json()["trace_id"])["policy_version"] == second["version"]

    # A mistake in the file: the deny rules stay, and the error is visible everywhere.
    write_policy(mesh, rules("allow").replace("operator: within", "operator: inside"))
    wait_until(lambda: policy_set(mesh).get("error"), DEADLINE, "the refused reload in /health")
    refused = policy_set(mesh)
    assert refused["version"] == second["version"]
    assert "team.yaml: rules[0].condition.operator: Input should be" in refused["error"]
    assert all(list_status(mesh, a) == 403 for a in AGENTS)
    health = mesh.cli("health")
    assert (
        health.returncode == 1
        and "last reload REFUSED" in health.stdout
        and "team.yaml" in health.stdout
    )
    again = mesh.cli("reload")
    assert again.returncode == 1 and "policies NOT reloaded" in again.stderr, again
    log = (mesh.state / "logs" / "gateway-0.log").read_text()
    assert "refused, policy set " + second["version"] + " stays" in log

    # Fixed: the error is gone and the file's rules decide.
    write_policy(mesh, rules("allow"))
    wait_until(lambda: list_status(mesh) == 200, DEADLINE, "the fixed rules deciding")
    assert policy_set(mesh).get("error") is None
    assert policy_set(mesh)["version"] == first["version"]  # same content, same version


def test_mesh_reload_applies_at_once_and_sighup_restarts_nothing(mesh: Mesh) -> None:
    pids = {role: mesh.role_pids(role) for role in ("gateway", "policy", "upstream")}
    write_policy(mesh, rules("deny"))
    answer = mesh.cli(
        "--url", mesh.url, "reload"
    )  # the watcher may have been first: then "unchanged"
    assert answer.returncode == 0, answer
    assert answer.stdout.startswith(("policies reloaded", "policies unchanged"))
    assert all(list_status(mesh, a) == 403 for a in AGENTS)  # no waiting: applied when it answered

    write_policy(mesh, rules("allow"))
    assert mesh.proc is not None
    mesh.proc.send_signal(signal.SIGHUP)  # to `agent-mesh serve`: passed to the gateway
    wait_until(lambda: list_status(mesh) == 200, DEADLINE, "the rules after SIGHUP")
    wait_until(
        lambda: "reload (SIGHUP)" in (mesh.state / "logs" / "gateway-0.log").read_text(),
        DEADLINE,
        "the gateway's log of the SIGHUP reload",
    )
    assert {role: mesh.role_pids(role) for role in pids} == pids  # nothing restarted
    assert mesh.http.get("/ready").status_code == 200


def test_rate_windows_survive_a_reload(mesh: Mesh) -> None:
    assert [list_status(mesh, "bot") for _ in range(2)] == [200, 200]
    before = policy_set(mesh)["version"]
    write_policy(mesh, rules("allow", extra="  - {tools: [x.y], action: deny}\n"))
    assert mesh.cli("reload").returncode == 0
    assert policy_set(mesh)["version"] != before
    third = mesh.call("filesystem.list_directory", {"path": str(mesh.data)}, agent="bot")  # type: ignore[attr-defined]
    assert third.status_code == 429 and "max_per_minute=2" in third.json()["error"], third.text


def test_a_call_waiting_for_approval_finishes_under_the_version_that_decided_it(mesh: Mesh) -> None:
    write_policy(mesh, rules("allow"))
    mesh.cli("reload")
    deciding = policy_set(mesh)["version"]
    target = mesh.data / "approved.txt"  # type: ignore[attr-defined]
    result: dict[str, Any] = {}

    def call() -> None:
        response = mesh.call(
            "filesystem.write_file", {"path": str(target), "content": "ok"}, agent="agent-2"
        )
        result["response"] = response

    waiter = threading.Thread(target=call)
    waiter.start()
    wait_until(
        lambda: mesh.http.get("/approvals", params={"status": "pending"}).json(),
        DEADLINE,
        "the pending approval",
    )
    (pending,) = mesh.http.get("/approvals", params={"status": "pending"}).json()
    # New rules would deny every write; the waiting call was decided before them.
    write_policy(mesh, rules("allow").replace("action: human_approval", "action: deny"))
    assert mesh.cli("reload").returncode == 0
    assert policy_set(mesh)["version"] != deciding
    approved = mesh.http.post(f"/approvals/{pending['id']}/approve", json={"resolved_by": "test"})
    assert approved.status_code == 200, approved.text
    waiter.join(30)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert target.read_text() == "ok"
    assert trace(mesh, response.json()["trace_id"])["policy_version"] == deciding
    later = mesh.call(
        "filesystem.write_file", {"path": str(target), "content": "no"}, agent="agent-2"
    )
    assert later.status_code == 403


def test_an_mcp_servers_change_says_a_restart_is_needed(mesh: Mesh) -> None:
    config = yaml.safe_load(mesh.config_path.read_text())
    original = mesh.config_path.read_text()
    config["mcp_servers"].append({"name": "memory", "command": npm_server("memory")})
    config["mcp_servers"][0]["timeout_seconds"] = 30
    try:
        mesh.config_path.write_text(yaml.safe_dump(config))
        answer = mesh.cli("reload")
        assert answer.returncode == 0, answer
        needed = (
            "mcp_servers changed (added: memory; changed: filesystem): restart the mesh to apply it"
        )
        assert f"restart needed: {needed}" in answer.stdout
        assert needed in policy_set(mesh)["restart_needed"]
        assert needed in (mesh.state / "logs" / "gateway-0.log").read_text()
        assert (
            "memory" not in mesh.http.get("/health").json()["upstreams"]
        )  # not started behind our back
    finally:
        mesh.config_path.write_text(original)
        mesh.cli("reload")
    assert "restart_needed" not in policy_set(mesh)


def test_processes_restarting_while_the_file_is_invalid_run_on_the_last_valid_config(
    mesh: Mesh,
) -> None:
    write_policy(mesh, rules("allow"))
    assert mesh.cli("reload").returncode == 0
    version = policy_set(mesh)["version"]
    write_policy(mesh, rules("allow").replace("action: allow", "action: maybe"))
    wait_until(lambda: policy_set(mesh).get("error"), DEADLINE, "the refused reload")
    killed = {pid for role in ("gateway", "policy") for pid in mesh.role_pids(role)}
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        pids = {pid for role in ("gateway", "policy") for pid in mesh.role_pids(role)}
        try:
            return (
                len(pids) == 3 and not pids & killed and mesh.http.get("/ready").status_code == 200
            )
        except Exception:  # noqa: BLE001 - the gateway is restarting
            return False

    wait_until(back, 30, "the gateway and both policy workers back, not given up on")
    assert all(list_status(mesh, a) == 200 for a in AGENTS)  # the last valid rules decide
    after = policy_set(mesh)
    assert after["version"] == version
    assert "running on the last valid config" in after["error"] and "team.yaml" in after["error"], (
        after
    )
    write_policy(mesh, rules("deny"))
    wait_until(
        lambda: list_status(mesh) == 403 and not policy_set(mesh).get("error"),
        DEADLINE,
        "the fixed file applied, the error gone",
    )


async def test_a_stdio_connector_follows_the_reloads(mesh: Mesh) -> None:
    from mcp import Client, StdioServerParameters

    write_policy(mesh, rules("allow"))
    assert mesh.cli("reload").returncode == 0
    params = StdioServerParameters(
        command=sys.executable,
        env=mesh.env,
        cwd=str(mesh.tmp),
        args=[
            "-m",
            "agent_mesh",
            "--mcp",
            "--config",
            str(mesh.config_path),
            "--mcp-agent",
            "agent-x",
        ],
    )

    def owner(agent: str) -> str:  # the broker's affinity (bus/routing.py: rendezvous, crc32)
        return max(
            ["policy:0", "policy:1"], key=lambda s: zlib.crc32(s.encode() + b"\0" + agent.encode())
        )

    assert owner("agent-x") != owner("agent-0")
    path = {"path": str(mesh.data)}  # type: ignore[attr-defined]
    async with Client(params, mode="legacy") as client:  # attaches to the running mesh
        assert not (await client.call_tool("filesystem.list_directory", path)).is_error
        write_policy(mesh, rules("deny"))
        # Only agent-0's worker switches here; agent-x is the other worker's, which switches
        # only because the connector's own check names the new generation (policy.set.changed).
        wait_until(lambda: list_status(mesh, "agent-0") == 403, DEADLINE, "the new rules via REST")
        denied = await client.call_tool("filesystem.list_directory", path)
        assert denied.is_error and "denied by policy team" in denied.content[0].text  # type: ignore[union-attr]
