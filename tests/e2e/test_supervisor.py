"""Deployment config 2 end to end: a mesh with `supervisor.enabled` (calls needing approval block)
and a real `agent-mesh supervisor` resolving them through the HTTP API: by rule in well under a
second, by the (fake) ollama model, or left to a human; its reasoning and confidence land in the
trace; the operator token; dry-run; history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.autoresolve.fake_llm import FakeLlm
from tests.e2e.mesh import Mesh
from tests.e2e.supervisor_proc import SupervisorProc
from tests.support import npm_server, wait_until

TOKEN = "operator-secret-2"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    memory = tmp_path_factory.mktemp("memory") / "graph.jsonl"
    config = {
        "supervisor": {"enabled": True},
        "approval": {"timeout_seconds": 15, "memory_threshold": 0},
        "auth": {"operator_token": TOKEN},
        "trace_file": "traces.jsonl",
        "mcp_servers": [
            {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]},
            {
                "name": "memory",
                "command": npm_server("memory"),
                "env": {"MEMORY_FILE_PATH": str(memory)},
            },
        ],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["fs.list_directory"], "action": "allow"},
                    {"tools": ["fs.*"], "action": "human_approval"},
                ],
            },
            {
                "name": "supervisor",
                "agent": "supervisor",
                "rules": [{"tools": ["memory.*"], "action": "allow"}],
            },
        ],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config).start()
    m.memory_file = memory  # type: ignore[attr-defined]
    m.demo = demo  # type: ignore[attr-defined]
    yield m
    m.stop()


def settings(mesh: Mesh, llm: FakeLlm, **extra: Any) -> dict[str, Any]:
    demo = mesh.demo  # type: ignore[attr-defined]
    return {
        "mesh_url": mesh.url,
        "poll_interval": "100ms",
        "rules": [
            {
                "name": "project",
                "tools": ["fs.write_file"],
                "condition": f"params.path starts_with {demo}",
                "action": "approve",
                "confidence": 0.95,
            },
            {"name": "outside", "tools": ["fs.write_file"], "action": "deny", "confidence": 0.9},
        ],
        "llm": {"url": llm.url, "model": "qwen3:14b", "timeout": "2s", "min_confidence": 0.8},
    } | extra


@pytest.fixture
def supervisor(tmp_path: Path, mesh: Mesh, llm: FakeLlm) -> Iterator[SupervisorProc]:
    proc = SupervisorProc(
        tmp_path / "sv", settings(mesh, llm), env={"MESH_OPERATOR_TOKEN": TOKEN}
    ).start()
    proc.wait_log("connected to the mesh at")
    yield proc
    assert proc.stop() == 0, proc.log()


def background(mesh: Mesh, tool: str, params: dict[str, Any]) -> Future[httpx.Response]:
    return ThreadPoolExecutor(1).submit(lambda: mesh.call(tool, params))


def traces(mesh: Mesh, tool: str) -> list[dict[str, Any]]:
    body = mesh.http.get("/traces", params={"tool": tool, "limit": 20}).json()
    return body if isinstance(body, list) else body["traces"]


def pending(mesh: Mesh) -> list[dict[str, Any]]:
    body = mesh.http.get("/approvals", params={"status": "pending"}).json()
    return body if isinstance(body, list) else body["approvals"]


def test_rule_resolves_a_blocked_call_in_well_under_a_second(
    mesh: Mesh, supervisor: SupervisorProc
) -> None:
    path = str(mesh.demo / "note.txt")  # type: ignore[attr-defined]
    started = time.perf_counter()
    response = mesh.call("fs.write_file", {"path": path, "content": "by rule"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert elapsed < 0.8, f"blocked {elapsed:.2f}s"
    assert Path(path).read_text() == "by rule"
    (trace,) = [t for t in traces(mesh, "fs.write_file") if t["params"].get("path") == path]
    assert trace["approved_by"] == "supervisor:project"
    assert trace["supervisor_confidence"] == 0.95
    assert "params.path starts_with" in trace["supervisor_reasoning"]
    supervisor.wait_log("approve ")
    assert "by rule:project (0.95)" in supervisor.log()


def test_rule_denies_a_traversal(mesh: Mesh, supervisor: SupervisorProc) -> None:
    demo = mesh.demo  # type: ignore[attr-defined]
    response = mesh.call("fs.write_file", {"path": f"{demo}/../escaped.txt", "content": "x"})
    assert response.status_code == 403
    assert response.json()["approval_status"] == "denied"
    (trace,) = [t for t in traces(mesh, "fs.write_file") if "escaped" in t["params"]["path"]]
    assert (trace["approved_by"], trace["supervisor_confidence"]) == ("supervisor:outside", 0.9)


def test_model_resolves_what_no_rule_covers(
    mesh: Mesh, llm: FakeLlm, supervisor: SupervisorProc
) -> None:
    llm.reply = json.dumps(
        {"decision": "approve", "confidence": 0.9, "reasoning": "a directory in the demo"}
    )
    path = str(mesh.demo / "made-by-model")  # type: ignore[attr-defined]
    response = mesh.call("fs.create_directory", {"path": path})
    assert response.status_code == 200, response.text
    assert Path(path).is_dir()
    (trace,) = [t for t in traces(mesh, "fs.create_directory") if t["params"]["path"] == path]
    assert trace["approved_by"] == "supervisor:qwen3:14b"
    assert (trace["supervisor_reasoning"], trace["supervisor_confidence"]) == (
        "a directory in the demo",
        0.9,
    )
    _, request = llm.requests[-1]
    assert path in request["messages"][1]["content"]


def test_garbage_from_the_model_leaves_it_to_a_human(
    mesh: Mesh, llm: FakeLlm, supervisor: SupervisorProc
) -> None:
    llm.reply = "I would probably approve this one."
    path = str(mesh.demo / "ask-a-human")  # type: ignore[attr-defined]
    call = background(mesh, "fs.create_directory", {"path": path})
    supervisor.wait_log("escalate ")
    assert "model answer malformed" in supervisor.log()
    (waiting,) = [a for a in pending(mesh) if a["params"].get("path") == path]
    time.sleep(0.5)  # several polls: it is not decided again
    assert supervisor.count("escalate ") == 1
    resolved = mesh.http.post(
        f"/approvals/{waiting['id']}/approve",
        json={"resolved_by": "human"},
        headers={"X-Operator-Token": TOKEN},
    )
    assert resolved.status_code == 200
    assert call.result(timeout=30).status_code == 200
    history = supervisor.command("history", "--tool", "fs.create_directory", "--json")
    assert history.returncode == 0, history.stderr
    rows = [json.loads(line) for line in history.stdout.splitlines()]
    assert [r["action"] for r in rows][:1] == ["escalate"]
    assert rows[0]["outcome"] == "escalated" and rows[0]["inputs"]["params"]["path"] == path


def test_history_table(mesh: Mesh, supervisor: SupervisorProc) -> None:
    mesh.call("fs.write_file", {"path": str(mesh.demo / "h.txt"), "content": "h"})  # type: ignore[attr-defined]
    supervisor.wait_log("approve ")
    result = supervisor.command("history", "--agent", "claude", "--limit", "5")
    assert result.returncode == 0, result.stderr
    assert "rule:project" in result.stdout and "resolved" in result.stdout


def test_missing_or_wrong_operator_token_is_said_once(
    tmp_path: Path, mesh: Mesh, llm: FakeLlm
) -> None:
    for name, env, message in [
        ("none", {}, "requires an operator token"),
        ("wrong", {"MESH_OPERATOR_TOKEN": "not-the-token"}, "refused our operator token"),
    ]:
        proc = SupervisorProc(
            tmp_path / name,
            settings(mesh, llm, tool_filter="fs.write_file"),
            env=env,
            unset=() if env else ("MESH_OPERATOR_TOKEN",),
        ).start()
        try:
            proc.wait_log(message)
            target = str(mesh.demo / f"{name}.txt")  # type: ignore[attr-defined]
            call = background(mesh, "fs.write_file", {"path": target, "content": "x"})
            proc.wait_log(" [refused]")
            time.sleep(0.5)  # several polls (poll_interval 100ms): it is not said again
            assert proc.count(message) == 1, proc.log()
            assert "Traceback" not in proc.log()
        finally:
            proc.stop()
        (waiting,) = [
            a for a in pending(mesh) if a["params"].get("path", "").endswith(f"{name}.txt")
        ]
        mesh.http.post(
            f"/approvals/{waiting['id']}/deny", json={}, headers={"X-Operator-Token": TOKEN}
        )
        assert call.result(timeout=30).status_code == 403


def test_dry_run_decides_and_resolves_nothing(tmp_path: Path, mesh: Mesh, llm: FakeLlm) -> None:
    proc = SupervisorProc(
        tmp_path / "dry",
        settings(mesh, llm),
        env={"MESH_OPERATOR_TOKEN": TOKEN},
        args=("--dry-run",),
    ).start()
    try:
        path = str(mesh.demo / "dry.txt")  # type: ignore[attr-defined]
        call = background(mesh, "fs.write_file", {"path": path, "content": "x"})
        proc.wait_log("approve ")
        assert "[dry-run]" in proc.log()
        time.sleep(0.5)  # several polls (poll_interval 100ms): it is not decided again
        (waiting,) = [a for a in pending(mesh) if a["params"].get("path") == path]
        assert proc.count("approve ") == 1
    finally:
        proc.stop()
    mesh.http.post(f"/approvals/{waiting['id']}/deny", json={}, headers={"X-Operator-Token": TOKEN})
    assert call.result(timeout=30).status_code == 403
    assert not Path(path).exists()


def test_config_mistake_is_one_line(tmp_path: Path) -> None:
    proc = SupervisorProc(
        tmp_path,
        {"rules": [{"name": "x", "condition": "params.path startswith /", "action": "approve"}]},
    )
    result = proc.command()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "did you mean 'starts_with'?" in lines[0]
        and "Traceback" not in result.stderr
    )


def test_decisions_are_mirrored_to_the_memory_server_through_the_mesh(
    tmp_path: Path, mesh: Mesh, llm: FakeLlm
) -> None:
    memory = {"path": str(tmp_path / "d.db"), "mcp_tool_prefix": "memory."}
    proc = SupervisorProc(
        tmp_path / "mem", settings(mesh, llm, memory=memory), env={"MESH_OPERATOR_TOKEN": TOKEN}
    ).start()
    try:
        proc.wait_log("connected to the mesh at")
        demo = mesh.demo  # type: ignore[attr-defined]
        assert (
            mesh.call("fs.write_file", {"path": str(demo / "m.txt"), "content": "m"}).status_code
            == 200
        )

        def entities() -> dict[str, list[str]]:
            path = mesh.memory_file  # type: ignore[attr-defined]
            lines = path.read_text().splitlines() if path.exists() else []
            return {
                e["name"]: e["observations"]
                for e in map(json.loads, lines)
                if e.get("type") == "entity"
            }

        wait_until(
            lambda: "supervisor:claude:fs.write_file" in entities(),
            20,
            "the decision in the memory server",
        )
        (note,) = entities()["supervisor:claude:fs.write_file"]
        assert "approve by rule:project (0.95)" in note and "m.txt" in note
        # governed and traced like any call, as the supervisor's agent
        calls = [t for t in traces(mesh, "memory.create_entities") if t["agent_id"] == "supervisor"]
        assert calls and calls[0]["policy"] == "allow"

        # The model's context includes what the memory server holds for that agent + tool.
        llm.reply = json.dumps({"decision": "approve", "confidence": 0.9, "reasoning": "first dir"})
        assert mesh.call("fs.create_directory", {"path": str(mesh.demo / "m1")}).status_code == 200  # type: ignore[attr-defined]
        wait_until(
            lambda: "supervisor:claude:fs.create_directory" in entities(),
            20,
            "the model's decision",
        )
        llm.reply = json.dumps(
            {"decision": "approve", "confidence": 0.9, "reasoning": "second dir"}
        )
        assert mesh.call("fs.create_directory", {"path": str(mesh.demo / "m2")}).status_code == 200  # type: ignore[attr-defined]
        _, request = llm.requests[-1]
        prompt = request["messages"][1]["content"]
        assert "memory_server_note" in prompt and "first dir" in prompt
    finally:
        assert proc.stop() == 0, proc.log()
