"""The generated supervisord configuration: parsed by supervisor's own config parser."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import yaml

from agent_mesh.launcher import supervisor_conf
from mesh_config.file import load_config

REPO = Path(__file__).resolve().parents[2]


def _programs(text: str) -> dict[str, configparser.SectionProxy]:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {s.split(":", 1)[1]: parser[s] for s in parser.sections() if s.startswith("program:")}


def test_tree_has_every_role_with_numprocs(tmp_path: Path) -> None:
    config = {
        "policy_workers": 3,
        "mcp_servers": [
            {"name": "fs", "command": "npx", "args": ["-y", "x"], "workers": 2},
            {"name": "mem", "command": "node", "args": ["100% sure.js"]},
        ],
    }
    path = tmp_path / "100%" / "c.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    text = supervisor_conf(loaded, tmp_path / "state", port=9999)
    programs = _programs(text)
    assert set(programs) == {
        "wakeup",
        "broker",
        "tracer",
        "approval",
        "policy",
        "upstream-fs",
        "upstream-mem",
        "gateway",
    }
    assert programs["policy"]["numprocs"] == "3"
    assert programs["upstream-fs"]["numprocs"] == "3"  # workers + the warm spare
    assert programs["upstream-mem"]["numprocs"] == "2"
    assert programs["upstream-fs"]["command"].endswith("--slot %(process_num)d")
    assert "--port 9999" in programs["gateway"]["command"]
    # A literal % in a path is escaped for supervisord's %(...)s expansion.
    assert "100%%" in programs["broker"]["command"]
    for program in programs.values():
        assert program["autorestart"] == "true" and program["killasgroup"] == "true"


def test_gateway_processes_are_numbered_only_when_several(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"gateway": {"processes": 2}}))
    gateway = _programs(supervisor_conf(load_config(path), tmp_path / "state"))["gateway"]
    assert gateway["numprocs"] == "2" and gateway["command"].endswith("--slot %(process_num)d")
    assert gateway["process_name"] == "%(program_name)s-%(process_num)d"
    path.write_text(yaml.safe_dump({"gateway": {"processes": "auto"}}))
    auto = _programs(supervisor_conf(load_config(path), tmp_path / "state"))["gateway"]
    assert auto["numprocs"] == str(os.cpu_count())
    path.write_text(yaml.safe_dump({}))
    one = _programs(supervisor_conf(load_config(path), tmp_path / "state"))["gateway"]
    assert one["numprocs"] == "1" and "--slot" not in one["command"]


def test_supervisor_accepts_the_generated_file(tmp_path: Path) -> None:
    from supervisor.options import ServerOptions

    loaded = load_config(REPO / "examples" / "filesystem.yaml")
    conf = tmp_path / "supervisord.conf"
    (tmp_path / "logs").mkdir()
    conf.write_text(supervisor_conf(loaded, tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    names = sorted(p.name for group in options.process_group_configs for p in group.process_configs)
    assert names == [
        "approval",
        "broker",
        "gateway",
        "policy",
        "tracer",
        "upstream-filesystem-0",
        "upstream-filesystem-1",
        "wakeup",
    ]  # the worker and its warm spare


def test_remote_only_server_has_no_local_program(tmp_path: Path) -> None:
    """`workers: 0`: served by workers on other hosts; supervisord starts none here."""
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bus": {"listen": "tcp://0.0.0.0:7000", "keys": "keys"},
                "mcp_servers": [
                    {"name": "far", "command": "srv", "workers": 0},
                    {"name": "near", "command": "srv"},
                ],
            }
        )
    )
    programs = _programs(supervisor_conf(load_config(path), tmp_path / "state"))
    assert "upstream-far" not in programs and programs["upstream-near"]["numprocs"] == "2"
    # The broker reads `bus:` from the config itself: flags and environment can still override it.
    assert "--connect" not in programs["broker"]["command"]


def _serve(config: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`agent-mesh serve` that fails before supervisord starts (the broker's tcp settings)."""
    clean = {
        k: v for k, v in os.environ.items() if k not in ("AGENT_MESH_KEYS", "AGENT_MESH_LISTEN")
    }
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", "serve", "--config", str(config)],
        env={**clean, "AGENT_MESH_HOME": str(tmp_path / "home"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )


def test_serve_refuses_unusable_bus_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("bus: {listen: 'tcp://127.0.0.1:7000', keys: nokeys}\n")
    missing = _serve(config, tmp_path)
    assert missing.returncode != 0
    assert (
        f"agent-mesh: bus.keys in {config}: {tmp_path / 'nokeys'}: no such directory"
        in missing.stderr
    )
    (tmp_path / "empty").mkdir()
    empty = _serve(
        config, tmp_path, AGENT_MESH_KEYS=str(tmp_path / "empty")
    )  # the environment wins
    assert empty.returncode != 0
    assert "agent-mesh: $AGENT_MESH_KEYS: " in empty.stderr and "broker.key_secret" in empty.stderr
    bare = tmp_path / "bare.yaml"
    bare.write_text("mcp_servers: [{name: far, command: srv, workers: 0}]\n")
    unkeyed = _serve(bare, tmp_path, AGENT_MESH_LISTEN="tcp://127.0.0.1:7000")
    assert unkeyed.returncode != 0
    assert (
        "agent-mesh: $AGENT_MESH_LISTEN: tcp://127.0.0.1:7000 needs CURVE keys: "
        f"bus.keys in {bare}, --keys DIR or $AGENT_MESH_KEYS"
    ) in unkeyed.stderr
    assert not (tmp_path / "home").exists() or not list(
        (tmp_path / "home").rglob("supervisord.conf")
    )
