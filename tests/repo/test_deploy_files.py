"""The production files (docs/deploy.md) agree with each other and with the launcher:
deploy/supervisord.conf is exactly what `agent-mesh serve` generates for deploy/agent-mesh.yaml
installed at /etc/agent-mesh, run by deploy/agent-mesh.service (issue 9, item 12)."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import deploy_conf


def test_deploy_supervisord_conf_is_what_serve_generates() -> None:
    shipped = (REPO / "deploy" / "supervisord.conf").read_text()
    assert shipped == deploy_conf.render(), (
        "deploy/supervisord.conf is stale: python scripts/deploy_conf.py > deploy/supervisord.conf"
    )
    assert "[program:wakeup]" in shipped  # the fast-restart ticker, as generated


def test_the_unit_runs_serve_on_the_installed_paths() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((REPO / "deploy" / "agent-mesh.service").read_text())
    service = unit["Service"]
    assert (
        service["ExecStart"]
        == f"{deploy_conf.PYTHON} -m agent_mesh serve --config {deploy_conf.CONFIG}"
    )
    assert service["User"] == "agent-mesh"
    env = (REPO / "deploy" / "agent-mesh.service").read_text()
    assert f"Environment=AGENT_MESH_HOME={deploy_conf.HOME}\n" in env
    assert f"Environment=AGENT_MESH_LOGS={deploy_conf.LOGS}\n" in env
    assert "EnvironmentFile=/etc/agent-mesh/env\n" in env


def test_the_config_keeps_state_and_upstreams_in_known_places() -> None:
    loaded = deploy_conf.installed()
    assert loaded.trace_path is not None and loaded.trace_path.is_relative_to(deploy_conf.HOME)
    for server in loaded.config.mcp_servers:
        assert server.command is not None
        assert server.command.startswith("/opt/agent-mesh/upstreams/node_modules/.bin/"), (
            server.command
        )
        assert "npx" not in [server.command, *server.args] and "-y" not in server.args
    raw = yaml.safe_load((REPO / "deploy" / "agent-mesh.yaml").read_text())
    assert raw["auth"]["operator_token"] == "${MESH_OPERATOR_TOKEN}"
