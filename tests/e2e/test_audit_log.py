"""The tamper-evident trace file on a real mesh (supervisord tree, the filesystem MCP server):
calls, an approval resolved and a grant made and revoked are chained into the trace file, which
rotates by size; the chain goes on when the trace writer is killed and restarted; `agent-mesh
audit verify` (the real command) passes on the log as written and names the right line after
each kind of tampering; the trace writer signs each file it rotates away (audit.checkpoint_every);
a signed checkpoint verifies with its key, fails with another, and catches lines cut from the
end."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, wait_until

TOKEN = "audit-operator-token"
OPS = {"X-Operator-Token": TOKEN}


def audit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env={**os.environ, "AGENT_MESH_HOME": str(cwd / "home")},
    )


def chain_files(mesh: Mesh) -> list[Path]:
    live = mesh.tmp / "traces.jsonl"
    return [*sorted(mesh.tmp.glob("traces.jsonl.0*")), live]


def records(mesh: Mesh) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in chain_files(mesh)
        if path.exists()
        for line in path.read_text().splitlines()
    ]


def wait_for_records(mesh: Mesh, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
    wait_until(lambda: predicate(records(mesh)), 15, "the records in the trace files")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    tmp = tmp_path_factory.mktemp("mesh")
    for name in ("audit.key", "other.key"):
        assert audit("keygen", name, cwd=tmp).returncode == 0
    config = {
        "auth": {"operator_token": TOKEN},
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "trace_file": "traces.jsonl",
        "audit": {"rotate_mb": 0.004, "signing_key": "audit.key", "checkpoint_every": "1h"},
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["fs.list_*", "fs.read_*", "fs.get_*"], "action": "allow"},
                    {"tools": ["fs.*"], "action": "human_approval"},
                ],
            }
        ],
    }
    with running(Mesh(tmp, config)) as m:
        m.demo = demo  # type: ignore[attr-defined]
        yield m


def calls(mesh: Mesh, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        r = mesh.call("fs.get_file_info", {"path": str(mesh.demo / "a.txt"), "n": i})  # type: ignore[attr-defined]
        assert r.status_code == 200, r.text
        ids.append(r.json()["trace_id"])
    return ids


def test_calls_resolutions_and_grants_are_one_chain_across_rotation(mesh: Mesh) -> None:
    traced = calls(mesh, 12)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            httpx.post,
            f"{mesh.url}/tool/fs.create_directory",
            json={"params": {"path": str(mesh.demo / "new")}},  # type: ignore[attr-defined]
            headers={"Authorization": "Bearer agent:claude"},
            timeout=60,
        )
        pending: list[dict[str, Any]] = []

        def found() -> bool:
            pending[:] = mesh.http.get("/approvals", params={"status": "pending"}).json()
            return bool(pending)

        wait_until(found, 10, "the pending approval")
        denied = mesh.http.post(
            f"/approvals/{pending[0]['id']}/deny", json={"resolved_by": "alice"}, headers=OPS
        )
        assert denied.status_code == 200
        refused = waiting.result()
        assert refused.status_code == 403
        traced.append(refused.json()["trace_id"])  # its record comes after its answer
    grant = mesh.http.post(
        "/grants", json={"agent": "claude", "tools": ["fs.*"], "duration": "5m"}, headers=OPS
    )
    assert grant.status_code == 201
    gid = grant.json()["id"]
    assert mesh.http.delete(f"/grants/{gid}", headers=OPS).status_code == 200

    def complete(recs: list[dict[str, Any]]) -> bool:
        actions = [r.get("action") for r in recs if r.get("kind") == "audit"]
        # the calls' own records (an audit event may carry its call's trace id too)
        ids = {r.get("trace_id") for r in recs if r.get("kind") != "audit"}
        return set(traced) <= ids and actions == [
            "approval.resolved",
            "grant.created",
            "grant.revoked",
        ]

    wait_for_records(mesh, complete)
    recs = records(mesh)
    resolved = next(r for r in recs if r.get("action") == "approval.resolved")
    assert (resolved["actor"], resolved["subject"], resolved["detail"]["status"]) == (
        "alice",
        pending[0]["id"],
        "denied",
    )
    assert [r["subject"] for r in recs if r.get("action", "").startswith("grant.")] == [gid, gid]
    files = chain_files(mesh)
    assert len(files) >= 3  # rotated by size (audit.rotate_mb)
    for older, newer in itertools.pairwise(files):
        if newer.read_text():
            first = json.loads(newer.read_text().splitlines()[0])
            assert first["prev_hash"] == json.loads(older.read_text().splitlines()[-1])["hash"]
    # The hashes are in GET /traces too, as in the file.
    listed = {t["trace_id"]: t for t in mesh.http.get("/traces", params={"limit": 500}).json()}
    in_file = {r["trace_id"]: r for r in recs if "trace_id" in r}
    assert listed[traced[0]]["hash"] == in_file[traced[0]]["hash"]
    ok = audit("verify", "traces.jsonl", cwd=mesh.tmp)
    assert ok.returncode == 0, ok.stderr
    # The mesh may still be writing (a record made after its call's answer): verify counted the
    # chain up to the head it names, which is that record of what is on disk after it ran.
    said = re.fullmatch(r"ok: (\d+) records in (\d+) file\(s\); head ([0-9a-f]{64})\n", ok.stdout)
    assert said is not None, ok.stdout
    counted, in_files, head = int(said[1]), int(said[2]), said[3]
    assert counted >= len(recs) and in_files >= len(files), ok.stdout
    assert records(mesh)[counted - 1]["hash"] == head, ok.stdout


def test_a_killed_trace_writer_goes_on_with_the_chain(mesh: Mesh) -> None:
    before = records(mesh)
    (pid,) = mesh.role_pids("tracer")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: mesh.role_pids("tracer") not in ([], [pid]), 20, "the trace writer restarted"
    )
    traced = calls(mesh, 3, start=100)
    wait_for_records(mesh, lambda recs: set(traced) <= {r.get("trace_id") for r in recs})
    after = records(mesh)
    first_new = after[len(before)]
    assert first_new["prev_hash"] == before[-1]["hash"]
    assert audit("verify", "traces.jsonl", cwd=mesh.tmp).returncode == 0


def signed(mesh: Mesh) -> list[dict[str, Any]]:
    path = mesh.tmp / "traces.checkpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_trace_writer_signs_each_rotated_file_at_its_end(mesh: Mesh) -> None:
    if len(chain_files(mesh)) < 2:  # run on its own: make the log rotate once
        calls(mesh, 10, start=400)
    rotated = chain_files(mesh)[:-1]
    wait_until(lambda: len(signed(mesh)) >= len(rotated), 10, "the rotations' checkpoints")
    ends = {p["file"]: (p["line"], p["hash"]) for p in signed(mesh)}
    for path in rotated:  # audit.checkpoint_every: the trace writer signed it as it rotated it
        last = path.read_text().splitlines()
        assert ends[path.name] == (len(last), json.loads(last[-1])["hash"]), path
    good = audit("verify", "--key", "audit.pub", "traces.jsonl", cwd=mesh.tmp)
    assert good.returncode == 0 and f"{len(signed(mesh))} signed checkpoints" in good.stdout, good


def test_a_checkpoint_verifies_with_its_key_only(mesh: Mesh) -> None:
    made = audit("checkpoint", "--config", str(mesh.config_path), cwd=mesh.tmp)
    assert made.returncode == 0, made.stderr
    good = audit("verify", "--key", "audit.pub", "traces.jsonl", cwd=mesh.tmp)
    assert good.returncode == 0 and f"{len(signed(mesh))} signed checkpoints" in good.stdout, good
    bad = audit("verify", "--key", "other.pub", "traces.jsonl", cwd=mesh.tmp)
    assert bad.returncode == 1 and "bad signature — not signed by this key" in bad.stderr


def tamper(mesh: Mesh, tmp: Path, target: str, change: Callable[[list[str]], list[str]]) -> str:
    """A copy of the whole log with one file changed (`target`: "oldest", the first rotated
    file, or "live"); `audit verify --key`'s one-line failure on it."""
    copy = tmp / "copy"
    copy.mkdir()
    files = chain_files(mesh)
    for path in files:
        shutil.copy(path, copy / path.name)
    shutil.copy(mesh.tmp / "traces.checkpoints.jsonl", copy)
    shutil.copy(mesh.tmp / "audit.pub", copy)
    changed = copy / (files[0] if target == "oldest" else files[-1]).name
    changed.write_text("".join(change(changed.read_text().splitlines(keepends=True))))
    result = audit("verify", "--key", "audit.pub", "traces.jsonl", cwd=copy)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    (line,) = result.stderr.strip().splitlines()
    return line


def edited(lines: list[str]) -> list[str]:
    assert '"claude"' in lines[1]
    return [lines[0], lines[1].replace('"claude"', '"mallory"'), *lines[2:]]


@pytest.mark.parametrize(
    ("target", "change", "expected"),
    [
        ("oldest", edited, "traces.jsonl.000001:2: edited: its content does not match its hash"),
        ("live", lambda ls: [*ls[:-1], ls[-1][:50]], "cut short (no end of line)"),
        ("oldest", lambda ls: [ls[0], *ls[2:]], "traces.jsonl.000001:2: does not follow line 1"),
        (
            "oldest",
            lambda ls: [ls[0], '{"trace_id": "forged"}\n', *ls[1:]],
            "traces.jsonl.000001:2: inserted: not in the chain (line 3 follows line 1)",
        ),
        (
            "oldest",
            lambda ls: [ls[0], ls[2], ls[1], *ls[3:]],
            "traces.jsonl.000001:2: reordered: it follows line 3, not line 1",
        ),
        ("live", lambda ls: ls[:-1], "no such record in the files checked: the log was cut"),
    ],
    ids=["edited", "truncated", "deleted", "inserted", "reordered", "lines-cut-from-the-end"],
)
def test_tampering_is_caught_at_its_line(
    mesh: Mesh,
    tmp_path: Path,
    target: str,
    change: Callable[[list[str]], list[str]],
    expected: str,
) -> None:
    if len(chain_files(mesh)) < 2:  # run on its own: make the log rotate once
        calls(mesh, 10, start=300)
    traced = calls(mesh, 2, start=200)
    wait_for_records(mesh, lambda recs: set(traced) <= {r.get("trace_id") for r in recs})
    made = audit("checkpoint", "--config", str(mesh.config_path), cwd=mesh.tmp)
    assert made.returncode == 0, made.stderr  # the log's last line, signed
    line = tamper(mesh, tmp_path, target, change)
    assert line.startswith("agent-mesh: ") and expected in line, line
