"""The generated supervisord configuration: parsed by supervisor's own config parser."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from agent_mesh.config import load_config
from agent_mesh.launcher import supervisor_conf

REPO = Path(__file__).resolve().parent.parent


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
    assert set(programs) == {"wakeup", "broker", "tracer", "approval", "policy", "upstream-fs", "upstream-mem", "gateway"}
    assert programs["policy"]["numprocs"] == "3"
    assert programs["upstream-fs"]["numprocs"] == "2"
    assert programs["upstream-mem"]["numprocs"] == "1"
    assert programs["upstream-fs"]["command"].endswith("--slot %(process_num)d")
    assert "--port 9999" in programs["gateway"]["command"]
    # A literal % in a path is escaped for supervisord's %(...)s expansion.
    assert "100%%" in programs["broker"]["command"]
    for program in programs.values():
        assert program["autorestart"] == "true" and program["killasgroup"] == "true"


def test_supervisor_accepts_the_generated_file(tmp_path: Path) -> None:
    from supervisor.options import ServerOptions

    loaded = load_config(REPO / "examples" / "filesystem.yaml")
    conf = tmp_path / "supervisord.conf"
    (tmp_path / "logs").mkdir()
    conf.write_text(supervisor_conf(loaded, tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    names = sorted(p.name for group in options.process_group_configs for p in group.process_configs)
    assert names == ["approval", "broker", "gateway", "policy", "tracer", "upstream-filesystem", "wakeup"]


def test_deploy_file_shows_the_same_roles() -> None:
    deploy = _programs((REPO / "deploy" / "supervisord.conf").read_text())
    roles = {name.removeprefix("agent-mesh-").split("-")[0] for name in deploy}
    assert roles == {"broker", "tracer", "approval", "policy", "upstream", "gateway"}
    for name, program in deploy.items():
        assert "agent-mesh run " in program["command"], name
