"""`agent-mesh discover` against the real npm MCP servers, without a mesh: the listing, the
starter policy (loaded back through a policy_dir), and failures said once."""

from __future__ import annotations

from pathlib import Path

import yaml

from mesh_config.file import load_config
from policy.engine import PolicyEngine
from tests.agent_mesh.test_cli import agent_mesh, one_line_failure
from tests.support import npm_server


def write_config(tmp: Path, *extra: dict[str, object]) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    servers = [
        {"name": "filesystem", "command": npm_server("filesystem"), "args": [str(tmp / "data")]},
        {
            "name": "memory",
            "command": npm_server("memory"),
            "env": {"MEMORY_FILE_PATH": str(tmp / "memory.jsonl")},
        },
        *extra,
    ]
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump({"mcp_servers": servers, "policy_dir": "policies"}))
    return path


def test_lists_every_tool_with_one_line(tmp_path: Path) -> None:
    result = agent_mesh("discover", "--config", str(write_config(tmp_path)), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'MCP server "filesystem" (stdio) (14 tools):' in out
    assert 'MCP server "memory" (stdio) (9 tools):' in out
    assert "Discovered 23 tools:" in out
    line = next(li for li in out.splitlines() if "filesystem.read_text_file" in li)
    assert "Read the complete contents of a file" in line
    assert all(
        len(li) <= 100 for li in out.splitlines()
    )  # one line each, at the 100-column default
    assert (
        "running on stdio" not in result.stdout + result.stderr
    )  # the servers' chatter is not shown


def test_generated_policy_loads_and_decides(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "policies").mkdir()
    target = tmp_path / "policies" / "claude.yaml"
    result = agent_mesh(
        "discover",
        "--config",
        str(config),
        "--generate-policy",
        "--agent",
        "claude",
        "--output",
        str(target),
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"starter policy written to {target}" in result.stdout
    text = target.read_text()
    assert text.startswith("# Starter policy written by `agent-mesh discover --generate-policy`")
    policies = load_config(config).config.policies  # the mesh loads it as it is
    assert [p.name for p in policies] == ["claude-starter"]
    engine = PolicyEngine(policies)

    def action(tool: str, agent: str = "claude") -> str:
        return engine.evaluate(agent, tool, {}, now=0).action

    assert action("filesystem.read_text_file") == "allow"
    assert action("filesystem.list_directory") == "allow"
    assert action("memory.read_graph") == "allow"
    assert action("filesystem.move_file") == "human_approval"  # destructiveHint
    assert action("memory.delete_entities") == "human_approval"
    assert action("filesystem.create_directory") == "human_approval"
    assert action("memory.create_entities") == "human_approval"
    assert action("filesystem.not_there_yet") == "deny"
    assert action("filesystem.read_text_file", agent="bob") == "deny"  # for claude only


def test_policy_to_stdout_is_pure_yaml(tmp_path: Path) -> None:
    result = agent_mesh(
        "discover", "--config", str(write_config(tmp_path)), "--generate-policy", tmp=tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["agent"] == "*" and data["rules"][-1] == {"tools": ["*"], "action": "deny"}
    assert "Discovered 23 tools:" in result.stderr


def test_a_failing_source_is_named_and_the_others_listed(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"name": "broken", "command": "/bin/false"})
    result = agent_mesh(
        "discover",
        "--config",
        str(config),
        "--generate-policy",
        "-o",
        str(tmp_path / "p.yaml"),
        tmp=tmp_path,
    )
    assert result.returncode == 1
    assert 'MCP server "filesystem" (stdio) (14 tools):' in result.stdout
    assert 'MCP server "broken" (stdio): FAILED: ' in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith('agent-mesh: discover: MCP server "broken" (stdio) failed: ')
        and "failed to start" in last
    )
    assert (
        '# NOT INCLUDED (could not be listed): MCP server "broken"'
        in (tmp_path / "p.yaml").read_text()
    )


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("port: 9999\n")
    assert "no tool sources to discover" in one_line_failure(
        agent_mesh("discover", "--config", str(empty), tmp=tmp_path)
    )
    assert "file not found" in one_line_failure(
        agent_mesh("discover", "--config", str(tmp_path / "nope.yaml"), tmp=tmp_path)
    )
    result = agent_mesh("discover", "--config", str(empty), "--agent", "x", tmp=tmp_path)
    assert (
        result.returncode == 2 and "--agent and --output go with --generate-policy" in result.stderr
    )
