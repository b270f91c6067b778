"""`agent-mesh supervisor test-rules` and `history` on files, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_mesh.cli import main as agent_mesh_main
from autoresolve.cli import main
from autoresolve.memory import Memory, Record

CONFIG = """
supervisor:
  memory: {path: decisions.db}
  rules:
    - name: project
      tools: ["fs.write_*"]
      condition: "params.path starts_with /home/user"
      action: approve
      confidence: 0.95
    - {name: secrets, condition: "params.path contains .ssh", action: deny}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(CONFIG)
    return path


def trace(tool: str, path: str, policy: str = "human_approval") -> str:
    return json.dumps(
        {
            "trace_id": "t",
            "agent_id": "claude",
            "tool": tool,
            "params": {"path": path},
            "policy": policy,
            "status_code": 200,
        }
    )


def test_test_rules_table(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text(
        "\n".join(
            [
                trace("fs.write_file", "/home/user/a.txt"),
                trace("fs.write_file", "/home/user/../../root/.ssh/keys"),
                trace("fs.read_file", "/etc/hosts"),
                trace("fs.read_file", "/etc/passwd", policy="allow"),
                "",
            ]
        )
    )
    assert main(["test-rules", "--config", str(config), "--traces", str(traces)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "fs." in line]
    assert len(rows) == 3  # the allowed call needed no approval
    assert "approve" in rows[0] and "project" in rows[0] and "0.95" in rows[0]
    assert "deny" in rows[1] and "secrets" in rows[1]
    assert "escalate" in rows[2] and "no rule" in rows[2]
    assert "3 calls that needed approval: 1 approve, 1 deny, 1 escalate" in out
    assert main(["test-rules", "--config", str(config), "--traces", str(traces), "--all"]) == 0
    assert "4 calls: 1 approve, 1 deny, 2 escalate" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"tool": "a"}\nnot json\n', "line 2: not JSON"),
        ('{"no_tool": 1}\n', "line 1: not a trace record"),
        (None, "No such file or directory"),
    ],
)
def test_test_rules_bad_traces(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    problem: str,
) -> None:
    traces = tmp_path / "t.jsonl"
    if content is not None:
        traces.write_text(content)
    assert main(["test-rules", "--config", str(config), "--traces", str(traces)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and problem in err[0] and err[0].startswith("agent-mesh supervisor: --traces")
    )


def test_history(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--config", str(config)]) == 2
    assert "no decisions yet" in capsys.readouterr().err
    memory = Memory(tmp_path / "decisions.db")
    for i, (agent, tool) in enumerate(
        [("claude", "fs.write_file"), ("bot", "fs.write_file"), ("claude", "fs.x")]
    ):
        memory.record(
            Record(
                f"id{i}" * 4,
                agent,
                tool,
                "approve",
                "rule:project",
                0.95,
                "inside",
                "resolved",
                3.0,
                False,
                {"params": {"path": f"/p{i}"}},
            )
        )
    memory.close()
    assert main(["history", "--config", str(config), "--agent", "claude", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tool"] for r in rows] == ["fs.x", "fs.write_file"]  # newest first
    assert (
        main(["--config", str(config), "history", "--tool", "fs.write_file", "--limit", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "bot" in out and "claude" not in out


def test_agent_mesh_supervisor_entry_point(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_mesh_main(["supervisor", "history", "--config", str(config) + ".missing"])
    assert exited.value.code == 2
    assert "file not found" in capsys.readouterr().err
