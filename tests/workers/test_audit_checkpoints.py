"""The trace writer's own signed checkpoints (`audit.checkpoint_every`, workers/audit_checkpoint.py)
on the real chain file: signed periodically when the chain moved, at each rotation and at a clean
stop; `agent-mesh audit verify --key` (the real command) checks them and catches lines cut from
the end after one; a key the trace writer cannot use stops the mesh's start with one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bus.messages import TraceRecord, trace_record
from workers.audit_checkpoint import Checkpoints, load_signing_key
from workers.tracer import TraceStore


def agent_mesh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env={**os.environ, "AGENT_MESH_HOME": str(cwd / "home")},
    )


def record(store: TraceStore, i: int) -> None:
    made = trace_record(
        trace_id=f"t{i}",
        agent_id="a",
        tool="fs.read",
        policy="allow",
        status_code=200,
        latency_ms=1,
    )
    store.record([TraceRecord(**made)])


def points(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "traces.checkpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_signed_when_the_chain_moved_at_rotation_and_at_stop(tmp_path: Path) -> None:
    assert agent_mesh("audit", "keygen", "audit.key", cwd=tmp_path).returncode == 0
    key = load_signing_key(tmp_path / "audit.key")
    store = TraceStore(tmp_path / "t.db", tmp_path / "traces.jsonl", rotate_bytes=3000)
    assert store.chain is not None
    for i in range(3):
        record(store, i)
    signing = Checkpoints(store.chain, key, every=0.05)
    signing.start()
    record(store, 3)
    await until(lambda: len(points(tmp_path)) == 1, "the periodic checkpoint")
    [first] = points(tmp_path)
    assert (first["file"], first["line"], first["hash"]) == ("traces.jsonl", 4, store.chain.head)
    signing.now()  # the chain has not moved: not signed again
    assert len(points(tmp_path)) == 1
    for i in range(4, 20):  # past rotate_bytes: the file rotated away is signed at its end
        record(store, i)
    rotated = tmp_path / "traces.jsonl.000001"
    assert rotated.exists()
    ends = {p["file"]: (p["line"], p["hash"]) for p in points(tmp_path)}
    last = rotated.read_text().splitlines()
    assert ends["traces.jsonl.000001"] == (len(last), json.loads(last[-1])["hash"])
    await signing.stop()  # and where the live file ends
    live = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert (points(tmp_path)[-1]["file"], points(tmp_path)[-1]["line"]) == (
        "traces.jsonl",
        len(live),
    )
    store.close()

    ok = agent_mesh("audit", "verify", "--key", "audit.pub", "traces.jsonl", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"{len(points(tmp_path))} signed checkpoints" in ok.stdout
    (tmp_path / "traces.jsonl").write_text("".join(line + "\n" for line in live[:-1]))
    cut = agent_mesh("audit", "verify", "--key", "audit.pub", "traces.jsonl", cwd=tmp_path)
    assert cut.returncode == 1 and "no such record in the files checked" in cut.stderr, cut


async def test_a_restarted_writer_signs_only_what_it_appended(tmp_path: Path) -> None:
    """At start the last line may be one cut short and mended: its hash is not the head."""
    assert agent_mesh("audit", "keygen", "audit.key", cwd=tmp_path).returncode == 0
    key = load_signing_key(tmp_path / "audit.key")
    store = TraceStore(tmp_path / "t.db", tmp_path / "traces.jsonl")
    record(store, 0)
    store.close()
    store = TraceStore(tmp_path / "t2.db", tmp_path / "traces.jsonl")
    assert store.chain is not None
    signing = Checkpoints(store.chain, key, every=3600)
    signing.now()
    assert points(tmp_path) == []
    record(store, 1)
    signing.now()
    assert [(p["file"], p["line"]) for p in points(tmp_path)] == [("traces.jsonl", 2)]
    store.close()


def test_an_unusable_signing_key_is_one_line_at_check_and_serve(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trace_file": "traces.jsonl",
                "audit": {"signing_key": "missing.key", "checkpoint_every": "10m"},
            }
        )
    )
    for command in ("check", "serve"):
        result = agent_mesh(command, "--config", str(config), cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result
        assert result.stderr.strip().splitlines()[-1] == (
            f"agent-mesh: {config}: audit.signing_key {tmp_path / 'missing.key'}: "
            "No such file or directory"
        ), result.stderr
