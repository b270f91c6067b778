"""The walking skeleton end to end: `agent-mesh serve` with the real process tree under
supervisord, the real npm filesystem server, REST calls as a user would make them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import alive, descendants, npm_server, wait_until

TRACE_FIELDS = {
    "trace_id",
    "session_id",
    "agent_id",
    "tool",
    "params",
    "policy",
    "policy_rule",
    "status_code",
    "latency_ms",
    "error",
    "timestamp",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    (root / "hello.txt").write_text("hello")
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Iterator[Mesh]:
    config = yaml_config(demo)
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


def yaml_config(demo: Path) -> dict[str, object]:
    # The shipped example's policies, on a demo dir of our own.
    import yaml

    example = yaml.safe_load(
        (Path(__file__).parents[2] / "examples" / "filesystem.yaml").read_text()
    )
    example["mcp_servers"][0].update(command=npm_server("filesystem"), args=[str(demo)])
    example["trace_file"] = "traces.jsonl"
    return dict(example)


def test_allowed_call_returns_the_real_listing(mesh: Mesh, demo: Path) -> None:
    r = mesh.call("filesystem.list_directory", {"path": str(demo)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "allow"
    text = body["result"]["content"][0]["text"]
    assert "[FILE] hello.txt" in text and "[DIR] notes" in text
    assert len(body["trace_id"]) == 32 and body["latency_ms"] > 0


def test_denied_tool_names_the_rule(mesh: Mesh, demo: Path) -> None:
    r = mesh.call(
        "filesystem.move_file", {"source": str(demo / "hello.txt"), "destination": str(demo / "x")}
    )
    assert r.status_code == 403
    assert r.json()["policy"] == "deny"
    assert "policy claude" in r.json()["error"]
    assert (demo / "hello.txt").exists()


def test_anonymous_is_denied_by_default_policy(mesh: Mesh, demo: Path) -> None:
    r = mesh.call("filesystem.list_directory", {"path": str(demo)}, agent=None)
    assert r.status_code == 403
    assert "denied by policy default" in r.json()["error"]


def test_unknown_tool_and_server_are_404(mesh: Mesh) -> None:
    r = mesh.call("filesystem.no_such_tool")
    assert r.status_code == 404 and "filesystem has no tool 'no_such_tool'" in r.json()["error"]
    r = mesh.call("nosuchserver.read_file")
    assert r.status_code == 404 and "no upstream server named 'nosuchserver'" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b'{"params": ', {}, 400, "invalid JSON body"),
        (b'{"params": [1, 2]}', {}, 400, "params must be an object"),
        (b"[]", {}, 400, "params must be an object"),
        (b'{"params": {}}', {"Authorization": "Basic Zm9vOmJhcg=="}, 401, "Bearer agent:<id>"),
        (b"x" * (1 << 20 + 1), {}, 413, "too large"),
    ],
)
def test_bad_requests_get_precise_json_errors(
    mesh: Mesh, body: bytes, headers: dict[str, str], status: int, needle: str
) -> None:
    headers = {
        "Authorization": "Bearer agent:claude",
        "Content-Type": "application/json",
        **headers,
    }
    r = mesh.http.post("/tool/filesystem.list_directory", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_unknown_route_and_method_are_json(mesh: Mesh) -> None:
    r = mesh.http.get("/nope")
    assert r.status_code == 404 and r.json() == {"error": "no route /nope"}
    r = mesh.http.get("/tool/filesystem.list_directory")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_tools_servers_health_version(mesh: Mesh) -> None:
    tools = {t["name"]: t for t in mesh.http.get("/tools").json()}
    assert "filesystem.read_text_file" in tools or "filesystem.read_file" in tools
    assert (
        tools["filesystem.list_directory"]["inputSchema"]["properties"]["path"]["type"] == "string"
    )
    (server,) = mesh.http.get("/mcp-servers").json()
    assert (
        server["name"] == "filesystem"
        and server["status"] == "ready"
        and set(server["tools"]) == set(tools)
    )
    health = mesh.http.get("/health").json()
    assert health["status"] == "ok" and health["upstreams"] == {"filesystem": "up"}
    assert health["tools"] == len(tools)
    assert mesh.http.get("/ready").json()["status"] == "ok"
    assert mesh.http.get("/version").json()["name"] == "agent-mesh"


def test_every_call_is_traced_in_api_and_jsonl(mesh: Mesh, demo: Path) -> None:
    r1 = mesh.call(
        "filesystem.list_directory", {"path": str(demo)}, headers={"X-Session-Id": "s-42"}
    )
    r2 = mesh.call(
        "filesystem.move_file",
        {"source": "a", "destination": "b"},
        headers={"X-Session-Id": "s-42"},
    )
    ids = {r1.json()["trace_id"]: 200, r2.json()["trace_id"]: 403}

    def traced() -> list[dict[str, object]]:
        return [
            t
            for t in mesh.http.get("/traces", params={"agent": "claude"}).json()
            if t["trace_id"] in ids
        ]

    wait_until(lambda: len(traced()) == 2, 5, "both traces in /traces")
    for trace in traced():
        assert TRACE_FIELDS <= set(trace)
        assert trace["status_code"] == ids[str(trace["trace_id"])]
        assert trace["session_id"] == "s-42" and trace["agent_id"] == "claude"
    newest = mesh.http.get("/traces", params={"limit": 1}).json()
    assert newest[0]["trace_id"] == r2.json()["trace_id"]
    sessions = {s["session_id"]: s for s in mesh.http.get("/sessions").json()}
    assert sessions["s-42"]["event_count"] >= 2 and sessions["s-42"]["agent_id"] == "claude"
    events = mesh.http.get("/sessions/s-42").json()  # newest first
    assert [e["trace_id"] for e in events][:2] == [r2.json()["trace_id"], r1.json()["trace_id"]]
    assert mesh.http.get("/sessions/nope").json() == []
    lines = [json.loads(line) for line in (mesh.tmp / "traces.jsonl").read_text().splitlines()]
    in_file = {t["trace_id"]: t for t in lines if t["trace_id"] in ids}
    assert set(in_file) == set(ids)
    assert in_file[r2.json()["trace_id"]]["policy_rule"] == "claude"


def test_each_role_is_its_own_process(mesh: Mesh) -> None:
    for role in ("broker", "gateway", "policy", "tracer"):
        assert len(mesh.role_pids(role)) == 1, (role, mesh.processes())
    assert len(mesh.role_pids("upstream")) == 2, "one worker and its warm spare"


def test_killed_upstream_worker_fails_fast_then_recovers(mesh: Mesh, demo: Path) -> None:
    (pid,) = mesh.serving("filesystem")
    upstream_server = descendants(pid)
    assert upstream_server, "the worker should own its npm server process"
    os.kill(pid, signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        started = time.monotonic()
        # A distinct extra param per call keeps loop detection out of this test.
        r = mesh.call("filesystem.list_directory", {"path": str(demo), "attempt": len(statuses)})
        assert time.monotonic() - started < 5, "a call hung while the upstream worker was down"
        statuses.append(r.status_code)
        if r.status_code == 200 and len(statuses) > 1:
            break
        assert r.status_code in (200, 502, 503), r.text
        if r.status_code != 200:
            assert r.json()["error"].startswith(
                (
                    "upstream unavailable: filesystem (",
                    "upstream filesystem: its worker died during the call (",
                )
            ), r.text
        time.sleep(0.1)
    assert statuses[-1] == 200, statuses
    assert pid not in mesh.serving("filesystem") | set(mesh.role_pids("upstream"))
    # The dead worker's npm server must not linger as an orphan.
    wait_until(
        lambda: not any(alive(p) for p in upstream_server), 5, "orphaned upstream server to exit"
    )


def test_mesh_cli_reads_the_running_mesh(mesh: Mesh, demo: Path) -> None:
    import subprocess
    import sys

    r = mesh.call("filesystem.list_directory", {"path": str(demo), "cli": True})
    trace_id = r.json()["trace_id"]
    wait_until(
        lambda: trace_id in str(mesh.http.get("/traces").json()), 5, "the trace to be stored"
    )
    env = {**os.environ, "MESH_URL": mesh.url}
    run = [sys.executable, "-c", "from agent_mesh.mesh_cli import main; main()"]
    out = subprocess.run(
        [*run, "--json", "traces", "--limit", "50"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert trace_id in {t["trace_id"] for t in json.loads(out.stdout)}
    table = subprocess.run(
        [*run, "servers"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "NAME" in table and "TRANSPORT" in table
    assert "filesystem" in table and "ready" in table
    down = subprocess.run(
        [*run, "--url", "http://127.0.0.1:9", "pending"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert down.returncode != 0 and "cannot reach http://127.0.0.1:9" in down.stderr


def test_a_callers_trace_is_in_its_next_traces_read(mesh: Mesh, demo: Path) -> None:
    """Read-your-writes: once a caller has its answer, the gateway's next /traces has the call."""
    for n in range(40):
        tool, params = (
            ("filesystem.list_directory", {"path": str(demo), "n": n})
            if n % 2
            else ("filesystem.move_file", {"source": f"a{n}", "destination": "b"})
        )
        trace_id = mesh.call(tool, params, headers={"X-Session-Id": "ryw"}).json()["trace_id"]
        newest = mesh.http.get("/traces", params={"limit": 1}).json()
        assert [t["trace_id"] for t in newest] == [trace_id], f"call {n}: not yet in /traces"
        if n % 10 == 0:
            events = mesh.http.get("/sessions/ryw").json()  # newest first
            assert events[0]["trace_id"] == trace_id, f"call {n}: not yet in /sessions/ryw"


@pytest.mark.parametrize("route", ["/traces", "/sessions", "/approvals"])
@pytest.mark.parametrize("limit", ["abc", "-1", "1.5"])
def test_a_bad_limit_is_400_naming_it(mesh: Mesh, route: str, limit: str) -> None:
    r = mesh.http.get(route, params={"limit": limit})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(f"invalid query parameter limit={limit!r}: expected "), (
        r.json()
    )
    assert mesh.http.get(route, params={"limit": "3"}).status_code == 200
