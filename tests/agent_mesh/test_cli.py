"""`agent-mesh` through its real entry point (`python -m agent_mesh`): help that shows every mode
and option, and every failure a user can cause as one line and a non-zero exit (a traceback only
with --debug)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent_mesh.cli import _parser
from agent_mesh.roles import ROLES
from tests.support import alive, cmdline, free_port

REPO = Path(__file__).resolve().parents[2]


def agent_mesh(
    *args: str, tmp: Path, stdin: str = "", timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
        check=False,
        env={**os.environ, "AGENT_MESH_HOME": str(tmp / "home"), **env},
    )


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def config(tmp: Path, **fields: object) -> Path:
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump({"port": free_port(), "mcp_servers": [], **fields}))
    return path


def test_no_arguments_prints_usage_with_the_mcp_mode(tmp_path: Path) -> None:
    result = agent_mesh(tmp=tmp_path)
    assert result.returncode == 2
    assert "usage: agent-mesh" in result.stderr and "--mcp" in result.stderr
    assert "file not found" not in result.stderr


def test_help_lists_mcp_and_every_command(tmp_path: Path) -> None:
    out = agent_mesh("--help", tmp=tmp_path).stdout
    for word in (
        "--mcp",
        "--mcp-agent",
        "--config",
        "--port",
        "--debug",
        "serve",
        "connect",
        "check",
        "run",
        "keys",
    ):
        assert word in out


def _actions(
    parser: argparse.ArgumentParser, where: str = "agent-mesh"
) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _actions(sub, f"{where} {name}")
        else:
            found.append((where, action))
    return found


def test_every_option_has_help_text() -> None:
    missing = [
        f"{where} {'/'.join(a.option_strings) or a.dest}"
        for where, a in _actions(_parser())
        if not a.help
    ]
    assert missing == []


def test_run_lists_every_role(tmp_path: Path) -> None:
    out = agent_mesh("run", "--help", tmp=tmp_path).stdout
    roles = out.split("roles:", 1)[1]
    for role in ROLES:
        assert f"\n  {role} " in roles, role


def test_connect_to_nothing_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_failure(agent_mesh("connect", "--url", url, tmp=tmp_path, stdin="\n"))
    assert line == (
        f"agent-mesh: cannot reach the mesh at {url}/mcp: connection refused; is it running? "
        "(start it with `agent-mesh serve`, or give its address with --url)"
    )
    debug = agent_mesh("connect", "--url", url, "--debug", tmp=tmp_path, stdin="\n")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize("command", [["serve"], ["check"], [], ["--mcp"]])
def test_config_file_missing_or_bad(tmp_path: Path, command: list[str]) -> None:
    missing = one_line_failure(agent_mesh(*command, "--config", "nope.yaml", tmp=tmp_path))
    assert missing == "agent-mesh: nope.yaml: file not found"
    (tmp_path / "bad.yaml").write_text("port: [9090\n")
    bad = one_line_failure(agent_mesh(*command, "--config", "bad.yaml", tmp=tmp_path))
    assert bad.startswith("agent-mesh: bad.yaml: invalid YAML: line 2, column 1")


@pytest.mark.parametrize("command", [["serve"], ["check"], ["discover"], ["--mcp"]])
def test_no_config_says_where_it_looked_and_how_to_name_one(
    tmp_path: Path, command: list[str]
) -> None:
    line = one_line_failure(agent_mesh(*command, tmp=tmp_path))
    examples = REPO / "examples"
    assert line == (
        f"agent-mesh: no config: agent-mesh.yaml (the default) is not in {tmp_path}; name one "
        f"with --config PATH, e.g. --config {examples / 'filesystem.yaml'} (the shipped examples: "
        f"{examples}/)"
    )
    assert (examples / "filesystem.yaml").exists()


def test_check_of_a_supervisor_config_names_the_command_that_takes_it(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    result = agent_mesh(
        "check", "--config", "examples/supervisor.yaml", tmp=REPO, AGENT_MESH_HOME=home
    )
    line = one_line_failure(result)
    assert line.startswith("agent-mesh: examples/supervisor.yaml: this is a supervisor config")
    assert "`agent-mesh supervisor --config examples/supervisor.yaml`" in line
    assert "unknown key" not in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["--mcp"]])
def test_unusable_state_directory_is_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "home").write_text("a file, not a directory")
    path = config(tmp_path)
    line = one_line_failure(agent_mesh(*command, "--config", str(path), tmp=tmp_path))
    assert line.startswith(f"agent-mesh: cannot create the state directory {tmp_path / 'home'}/")
    assert line.endswith(": Not a directory; set AGENT_MESH_HOME to a directory of yours")


@pytest.mark.parametrize("command", [["serve"], ["--mcp"], []])
def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path, command: list[str]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        path = config(tmp_path)
        path.write_text(yaml.safe_dump({"port": port, "mcp_servers": []}))
        line = one_line_failure(agent_mesh(*command, "--config", str(path), tmp=tmp_path))
    finally:
        holder.close()
    fix = f"set port: in {path}" + ("" if command == ["--mcp"] else " or --port")
    assert line == f"agent-mesh: port {port} is in use (by pid {os.getpid()}: {_cmdline()}); {fix}"
    assert not list((tmp_path / "home").rglob("supervisord.pid")), "a tree was started"


def _cmdline() -> str:
    return (
        Path(f"/proc/{os.getpid()}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:80]
    )


def test_check_resolves_stdio_commands_as_the_worker_does(tmp_path: Path) -> None:
    here = tmp_path / "conf"
    here.mkdir()
    script = here / "server.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (here / "plain.txt").write_text("not executable")
    path = here / "mesh.yaml"
    servers = [
        {"name": "local", "command": "./server.sh"},  # relative to the config's directory
        {"name": "onpath", "command": "sh"},
        {"name": "remote", "command": "does-not-exist", "workers": 0},  # runs on another host
        {"name": "web", "url": "http://127.0.0.1:1/mcp", "transport": "streamable_http"},
    ]
    path.write_text(yaml.safe_dump({"mcp_servers": servers}))
    ok = agent_mesh("check", "--config", str(path), tmp=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"{path}: ok (4 servers" in ok.stdout
    servers += [
        {"name": "filesystem", "command": "does-not-exist"},
        {"name": "plain", "command": "./plain.txt"},
        {"name": "elsewhere", "command": "./server.sh", "cwd": str(tmp_path)},
    ]
    path.write_text(yaml.safe_dump({"mcp_servers": servers}))
    bad = agent_mesh("check", "--config", str(path), tmp=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        (
            f"agent-mesh: {path}: mcp_servers[4] (filesystem): command 'does-not-exist' not found "
            "on "
            "PATH"
        ),
        f"agent-mesh: {path}: mcp_servers[5] (plain): command './plain.txt' is not executable",
        (
            f"agent-mesh: {path}: mcp_servers[6] (elsewhere): command './server.sh' not found "
            f"(no {tmp_path}/server.sh)"
        ),
    ]


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_a_bad_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    result = agent_mesh("serve", "--config", str(config(tmp_path)), "--port", port, tmp=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("usage: agent-mesh serve ")
    assert "error: argument --port: " in result.stderr.splitlines()[-1]


def test_keys_in_a_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = one_line_failure(
        agent_mesh("keys", "--dir", str(tmp_path / "file" / "keys"), tmp=tmp_path)
    )
    assert line.startswith(f"agent-mesh keys: {tmp_path / 'file'}") and line.endswith(
        "; choose another with --dir"
    )


def test_serve_warns_of_a_server_that_cannot_start_and_serves_the_others(tmp_path: Path) -> None:
    path = config(tmp_path)
    path.write_text(
        yaml.safe_dump(
            {"port": free_port(), "mcp_servers": [{"name": "missing", "command": "nope-x"}]}
        )
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "serve", "--config", str(path)],
        env={**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stderr is not None
    lines = []
    try:
        for line in serve.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("agent-mesh: serving"):
                break
    finally:
        serve.terminate()  # at once: serve may be starting supervisord right now
        serve.wait(timeout=60)
    assert (
        f"agent-mesh: warning: {path}: mcp_servers[0] (missing): command 'nope-x' not found on "
        "PATH: "
        "it stays down until that is fixed"
    ) in lines, lines
    left = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if str(tmp_path) in cmdline(pid) and alive(pid)
    ]
    assert left == [], "serve stopped, its tree did not"


def test_ctrl_c_while_it_still_imports_is_a_quiet_exit(tmp_path: Path) -> None:
    # Ctrl-C in the second or so `agent-mesh serve` takes to import on a busy machine: a module
    # it imports is interrupted (here, deterministically, a `yaml` that raises it).
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "yaml.py").write_text("raise KeyboardInterrupt\n")
    path = os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")])
    result = agent_mesh("serve", "--config", "mesh.yaml", tmp=tmp_path, PYTHONPATH=path)
    assert (result.returncode, result.stderr) == (130, "")


def test_check_warns_of_a_rule_naming_no_server(tmp_path: Path) -> None:
    # A typo in a rule's server name matches no tool: the rule silently never applies.
    path = tmp_path / "mesh.yaml"
    rules = [
        {
            "tools": ["filesytem.read_*", "filesystem.*", "*.list_*", "mesh.catalog"],
            "action": "allow",
        }
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "mcp_servers": [{"name": "filesystem", "command": "sh"}],
                "cli_tools": [{"name": "git", "bin": "sh"}],
                "policies": [
                    {
                        "name": "dev",
                        "agent": "*",
                        "rules": [{"tools": ["git.log"], "action": "allow"}],
                    },
                    {"name": "claude", "agent": "claude", "rules": rules},
                ],
            }
        )
    )
    result = agent_mesh("check", "--config", str(path), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("warning")] == [
        (
            "warning: policies[1] (name=claude).rules[0].tools[0]: 'filesytem.read_*' matches no "
            "tool: no server is named 'filesytem' (did you mean 'filesystem'?)"
        )
    ]
