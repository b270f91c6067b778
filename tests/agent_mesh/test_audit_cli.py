"""`agent-mesh audit` through its real entry point: verify exits 0 on an intact chain and 1 with
one line naming the first broken line; rotated files are included; signed checkpoints verify with
the right key, fail with another, and catch what the chain alone cannot (lines cut at the end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from bus.messages import TraceRecord, trace_record
from workers.tracer import TraceStore


def agent_mesh(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
        check=False,
        env={**os.environ, "AGENT_MESH_HOME": str(tmp / "home")},
    )


def failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


def traces(tmp: Path, n: int, start: int = 0, rotate_bytes: int | None = None) -> Path:
    store = TraceStore(tmp / "t.db", tmp / "traces.jsonl", rotate_bytes)
    for i in range(start, start + n):
        store.record(
            [
                TraceRecord(
                    **trace_record(
                        trace_id=f"t{i}",
                        agent_id="a",
                        tool="fs.read",
                        policy="allow",
                        status_code=200,
                        latency_ms=1,
                    )
                )
            ]
        )
    store.close()
    return tmp / "traces.jsonl"


def mesh_config(tmp: Path) -> Path:
    path = tmp / "mesh.yaml"
    path.write_text(
        yaml.safe_dump(
            {"trace_file": "traces.jsonl", "audit": {"signing_key": "audit.key"}, "mcp_servers": []}
        )
    )
    return path


def test_verify_an_intact_chain_then_an_edited_one(tmp_path: Path) -> None:
    path = traces(tmp_path, 5)
    ok = agent_mesh("audit", "verify", "traces.jsonl", tmp=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 5 records in 1 file(s); head ")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:3], lines[3].replace('"t3"', '"t33"'), lines[4]]))
    assert failure(agent_mesh("audit", "verify", "traces.jsonl", tmp=tmp_path)) == (
        "agent-mesh: traces.jsonl:4: edited: its content does not match its hash"
    )


def test_verify_includes_rotated_files_unless_some_are_named(tmp_path: Path) -> None:
    traces(tmp_path, 10, rotate_bytes=1200)
    rotated = sorted(p.name for p in tmp_path.glob("traces.jsonl.0*"))
    assert len(rotated) >= 2
    whole = agent_mesh("audit", "verify", "traces.jsonl", tmp=tmp_path)
    assert whole.returncode == 0 and f"10 records in {len(rotated) + 1} file(s)" in whole.stdout
    named = agent_mesh("audit", "verify", *rotated[1:], "traces.jsonl", tmp=tmp_path)
    assert "does not start the chain" in failure(named)
    (tmp_path / rotated[0]).unlink()  # archived: the chain is checked from a known hash
    first = json.loads((tmp_path / rotated[1]).read_text().splitlines()[0])["prev_hash"]
    after = agent_mesh("audit", "verify", "--after", first, "traces.jsonl", tmp=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "not a SHA-256" in failure(
        agent_mesh("audit", "verify", "--after", "xyz", "traces.jsonl", tmp=tmp_path)
    )


def test_checkpoints_verify_with_their_key_only(tmp_path: Path) -> None:
    config = mesh_config(tmp_path)
    assert agent_mesh("audit", "keygen", "audit.key", tmp=tmp_path).returncode == 0
    assert agent_mesh("audit", "keygen", "other.key", tmp=tmp_path).returncode == 0
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    traces(tmp_path, 4)
    made = agent_mesh("audit", "checkpoint", "--config", str(config), tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("checkpoint: traces.jsonl:4 ")
    traces(tmp_path, 3, start=4)
    assert agent_mesh("audit", "checkpoint", "--config", str(config), tmp=tmp_path).returncode == 0
    points = [
        json.loads(line)
        for line in (tmp_path / "traces.checkpoints.jsonl").read_text().splitlines()
    ]
    assert [(p["file"], p["line"]) for p in points] == [("traces.jsonl", 4), ("traces.jsonl", 7)]
    good = agent_mesh("audit", "verify", "--key", "audit.pub", "traces.jsonl", tmp=tmp_path)
    assert good.returncode == 0 and "2 signed checkpoints" in good.stdout, good
    assert failure(
        agent_mesh("audit", "verify", "--key", "other.pub", "traces.jsonl", tmp=tmp_path)
    ) == (
        f"agent-mesh: traces.checkpoints.jsonl:1: checkpoint {points[0]['time']} "
        "(traces.jsonl:4): bad signature — not signed by this key, or edited"
    )


def test_a_checkpoint_catches_lines_cut_from_the_end(tmp_path: Path) -> None:
    config = mesh_config(tmp_path)
    agent_mesh("audit", "keygen", "audit.key", tmp=tmp_path)
    path = traces(tmp_path, 6)
    assert agent_mesh("audit", "checkpoint", "--config", str(config), tmp=tmp_path).returncode == 0
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))
    assert agent_mesh("audit", "verify", "traces.jsonl", tmp=tmp_path).returncode == 0
    cut = failure(agent_mesh("audit", "verify", "--key", "audit.pub", "traces.jsonl", tmp=tmp_path))
    assert cut.endswith(
        "(traces.jsonl:6): no such record in the files checked: the log was cut or rewritten "
        "before it (or its file was not given)"
    )


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    traces(tmp_path, 1)
    assert failure(agent_mesh("audit", "verify", "missing.jsonl", tmp=tmp_path)) == (
        "agent-mesh: missing.jsonl: No such file or directory"
    )
    (tmp_path / "junk.pub").write_text("junk")
    assert "--key junk.pub: not a PEM public key" in failure(
        agent_mesh("audit", "verify", "--key", "junk.pub", "traces.jsonl", tmp=tmp_path)
    )
    config = mesh_config(tmp_path)
    assert "audit.signing_key" in failure(
        agent_mesh("audit", "checkpoint", "--config", str(config), tmp=tmp_path)
    )
    agent_mesh("audit", "keygen", "audit.key", tmp=tmp_path)
    assert "exists (not overwritten)" in failure(
        agent_mesh("audit", "keygen", "audit.key", tmp=tmp_path)
    )
    assert "checkpoints traces.checkpoints.jsonl: No such file or directory" in failure(
        agent_mesh("audit", "verify", "--key", "audit.pub", "traces.jsonl", tmp=tmp_path)
    )
