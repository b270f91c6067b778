"""The kill switch end to end, on a real mesh (supervisord, broker, two policy workers, the
approval service, a real npm filesystem server): a frozen agent's calls are refused on REST and
/mcp while others are served, thawed it is served again; a pending approval of the frozen agent
is denied with the freeze's reason; freezes survive a restart of the whole mesh; the time from
the freeze request to the first refused call under a load of calls is measured."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.e2e.mesh import Mesh
from tests.support import npm_server, text_of, wait_until

TOKEN = "operator-freeze-1"
OPERATOR = {"X-Operator-Token": TOKEN}
LIST = "fs.list_allowed_directories"


def config(demo: Path) -> dict[str, Any]:
    return {
        "policy_workers": 2,
        "approval": {"timeout_seconds": 30},
        "auth": {"operator_token": TOKEN},
        "trace_file": "traces.jsonl",
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "asker",
                "agent": "asker",
                "rules": [{"tools": ["fs.write_file"], "action": "human_approval"}],
            },
            {"name": "open", "agent": "*", "rules": [{"tools": ["fs.*"], "action": "allow"}]},
        ],
    }


@pytest.fixture(scope="module")
def meshes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Mesh]]:
    """The mesh, in a list: the restart test replaces it with its successor."""
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    tmp = tmp_path_factory.mktemp("mesh")
    held = [Mesh(tmp, config(demo)).start()]
    yield held
    assert held[0].stop() == set()


@pytest.fixture
def mesh(meshes: list[Mesh]) -> Iterator[Mesh]:
    yield meshes[0]
    for freeze in meshes[0].http.get("/freezes").json():  # each test starts unfrozen
        meshes[0].http.delete(f"/freezes/{freeze['id']}", headers=OPERATOR)


def freeze(mesh: Mesh, **body: Any) -> dict[str, Any]:
    response = mesh.http.post("/freezes", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return dict(response.json())


def refused(mesh: Mesh, agent: str) -> httpx.Response:
    """Until `agent`'s call is refused (the freeze reaches the policy workers at once; on this
    loaded machine, give it a deadline)."""
    answers: list[httpx.Response] = []

    def look() -> bool:
        answers[:] = [mesh.call(LIST, agent=agent)]
        return answers[0].status_code == 403

    wait_until(look, 5, f"{agent}'s call refused", interval=0.01)
    return answers[0]


async def test_a_frozen_agent_is_refused_on_rest_and_mcp_others_served_thaw_serves_it(
    mesh: Mesh,
) -> None:
    assert mesh.call(LIST, agent="claude").status_code == 200
    made = mesh.cli("freeze", "agent", "claude", "--reason", "leaking secrets", token=TOKEN)
    assert made.returncode == 0, made.stderr
    (listed,) = mesh.http.get("/freezes").json()
    fid = listed["id"]
    assert made.stdout.strip() == f"freeze {fid[:8]}: agent claude frozen (mesh thaw {fid[:8]})"
    assert (listed["kind"], listed["target"], listed["reason"]) == (
        "agent",
        "claude",
        "leaking secrets",
    )
    answer = refused(mesh, "claude")
    said = f"frozen by the kill switch (agent claude, freeze {fid[:8]}); reason: leaking secrets"
    assert answer.json()["error"] == said and answer.json()["policy"] == "deny"
    assert mesh.call(LIST, agent="gemini").status_code == 200  # others still served
    async with mesh.mcp("claude") as client:
        result = await client.call_tool(LIST, {})
        assert result.is_error and text_of(result).startswith(said), text_of(result)
    async with mesh.mcp("gemini") as client:
        assert not (await client.call_tool(LIST, {})).is_error
    stdio = StdioServerParameters(  # the stdio front-end, attached to this running mesh
        command=sys.executable,
        args=["-m", "agent_mesh", "--mcp", "--config", str(mesh.config_path)],
        env={**os.environ, "AGENT_MESH_HOME": str(mesh.home)},
        cwd=str(mesh.config_path.parent),
    )
    async with Client(stdio, mode="legacy") as client:
        result = await client.call_tool(LIST, {})  # as claude, --mcp's default agent
        assert result.is_error and text_of(result).startswith(said), text_of(result)
    trace = answer.json()["trace_id"]

    def traced() -> bool:
        found = mesh.http.get("/traces", params={"agent": "claude", "limit": 50}).json()
        return any(t["trace_id"] == trace and t["policy_rule"] == f"freeze:{fid}" for t in found)

    wait_until(traced, 10, "the refused call traced with policy_rule freeze:<id>")
    wait_until(
        lambda: (
            '"action":"freeze.created"' in (mesh.tmp / "traces.jsonl").read_text()
            and fid in (mesh.tmp / "traces.jsonl").read_text()
        ),
        10,
        "the freeze an audit event in the trace file",
    )
    shown = mesh.cli("freezes", token=TOKEN)
    assert fid[:8] in shown.stdout and "agent claude" in shown.stdout, shown.stdout
    # An agent may not lift a freeze; without the token nobody may.
    anyone = mesh.http.delete(f"/freezes/{fid}")
    assert anyone.status_code == 403 and "operator token required" in anyone.json()["error"]
    thawed = mesh.cli("thaw", "agent", "claude", token=TOKEN)
    assert thawed.returncode == 0 and thawed.stdout.strip() == (
        f"freeze {fid[:8]} thawed: agent claude"
    ), thawed.stderr
    wait_until(lambda: mesh.call(LIST, agent="claude").status_code == 200, 5, "claude served")
    again = mesh.cli("thaw", "agent", "claude", token=TOKEN)
    assert again.returncode == 1
    assert again.stderr.strip() == "mesh thaw: no freeze of agent claude (mesh freezes lists them)"


def test_tool_and_all_freezes_and_bad_bodies(mesh: Mesh) -> None:
    tool = freeze(mesh, tool="fs.list_allowed_*", reason="audit")
    refused(mesh, "claude")
    assert mesh.call("fs.list_directory", {"path": "."}, agent="claude").status_code != 403
    health = mesh.http.get("/health")  # public: how many, not what nor why
    assert health.json()["freezes"] == {"count": 1, "all": False}
    assert "list_allowed" not in health.text and "audit" not in health.text
    mesh.http.delete(f"/freezes/{tool['id']}", headers=OPERATOR)
    everything = mesh.cli("freeze", "--all", "--reason", "incident", token=TOKEN)
    assert everything.returncode == 0, everything.stderr
    assert "every call" in refused(mesh, "anyone").json()["error"]
    assert mesh.http.get("/health").json()["freezes"] == {"count": 1, "all": True}
    shown = mesh.cli("health").stdout
    assert "freezes: 1 in force; everything is frozen (`mesh freeze --all`)" in shown, shown
    assert mesh.cli("thaw", "--all", token=TOKEN).returncode == 0
    assert mesh.http.get("/health").json()["freezes"] == {"count": 0, "all": False}
    assert "freezes:" not in mesh.cli("health").stdout
    for body in ({}, {"agent": "a", "tool": "b"}, {"agent": ""}, {"all": "yes"}):
        bad = mesh.http.post("/freezes", json=body, headers=OPERATOR)
        assert bad.status_code == 400, (body, bad.text)
    no_target = mesh.cli("freeze", "agent", token=TOKEN)
    assert no_target.returncode == 1
    assert no_target.stderr.strip() == "mesh freeze: say what: agent <id>, tool <glob> or --all"


def test_a_pending_approval_of_the_frozen_agent_is_denied_with_the_reason(mesh: Mesh) -> None:
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            lambda: mesh.call("fs.write_file", {"path": "b.txt", "content": "x"}, agent="asker")
        )
        pending: list[dict[str, Any]] = []

        def look() -> bool:
            pending[:] = mesh.http.get("/approvals", params={"status": "pending"}).json()
            return bool(pending)

        wait_until(look, 10, "asker's call pending")
        made = freeze(mesh, agent="asker", reason="runaway loop")
        assert made["denied_approvals"] == 1
        answer = waiting.result(timeout=10)
    assert answer.status_code == 403
    assert answer.json()["error"] == (
        f"approval {pending[0]['id'][:8]} denied by freeze:{made['id']}: frozen by the kill "
        f"switch (agent asker, freeze {made['id'][:8]}); reason: runaway loop"
    )


def test_freeze_latency_under_load(mesh: Mesh) -> None:
    """From the freeze request to the first refused call, while 4 clients call without pause."""
    stop = threading.Event()
    first_refused: list[float] = []
    served = [0]

    def load() -> None:
        with httpx.Client(base_url=mesh.url, timeout=30) as http:
            auth = {"Authorization": "Bearer agent:loader"}
            while not stop.is_set():
                answer = http.post(f"/tool/{LIST}", json={"params": {}}, headers=auth)
                if answer.status_code == 403:
                    first_refused.append(time.perf_counter())
                    return
                assert answer.status_code == 200, answer.text
                served[0] += 1

    with ThreadPoolExecutor(4) as pool:
        loaders = [pool.submit(load) for _ in range(4)]
        wait_until(lambda: served[0] >= 20, 20, "the load running")
        asked = time.perf_counter()
        made = freeze(mesh, agent="loader", reason="bench")
        answered = time.perf_counter()
        wait_until(lambda: bool(first_refused), 10, "a refused call", interval=0.001)
        stop.set()
        for loader in loaders:
            loader.result(timeout=30)
    latency = min(first_refused) - asked
    print(
        f"\nfreeze latency under load: {latency * 1000:.1f} ms from the freeze request to the "
        f"first refused call (the request itself took {(answered - asked) * 1000:.1f} ms; "
        f"{served[0]} calls served before; freeze {made['id'][:8]})"
    )
    assert latency < 1.0


def test_freezes_survive_a_restart_of_the_whole_mesh(meshes: list[Mesh]) -> None:
    old = meshes[0]
    made = freeze(old, agent="claude", reason="kept")
    refused(old, "claude")
    assert old.stop() == set()
    meshes[0] = new = Mesh(old.tmp, old.config).start()
    # Every policy worker loaded the freeze before serving: the first call is refused.
    first = new.call(LIST, agent="claude")
    assert first.status_code == 403 and made["id"][:8] in first.json()["error"]
    assert new.call(LIST, agent="gemini").status_code == 200
    assert [f["id"] for f in new.http.get("/freezes").json()] == [made["id"]]
    new.http.delete(f"/freezes/{made['id']}", headers=OPERATOR)
