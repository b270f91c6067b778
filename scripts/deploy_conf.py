"""deploy/supervisord.conf is what `agent-mesh serve` generates for deploy/agent-mesh.yaml installed
as docs/deploy.md (and scripts/deploy) say. After a change to the launcher or that config:

    python scripts/deploy_conf.py > deploy/supervisord.conf

tests/repo/test_deploy_files.py fails until the file is regenerated.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent_mesh.launcher import supervisor_conf
from mesh_config.file import load_config
from mesh_config.model import LoadedConfig

CONFIG = Path("/etc/agent-mesh/agent-mesh.yaml")
HOME = Path("/var/lib/agent-mesh")  # AGENT_MESH_HOME
LOGS = Path("/var/log/agent-mesh")  # AGENT_MESH_LOGS
PYTHON = Path(
    "/opt/agent-mesh/venv/bin/python"
)  # the unit's ExecStart runs `python -m agent_mesh serve`

HEADER = """\
; agent-mesh on a production host (docs/deploy.md): what `agent-mesh serve` writes into the state
; directory for /etc/agent-mesh/agent-mesh.yaml (deploy/agent-mesh.yaml) and runs under systemd
; (deploy/agent-mesh.service), shown here to read; regenerate it with scripts/deploy_conf.py.
; supervisorctl -c <this file in the state dir> status | restart gateway | stop policy:policy-1
"""


def installed(config: Path = CONFIG) -> LoadedConfig:
    """deploy/agent-mesh.yaml as if installed at `config`."""
    os.environ.setdefault("MESH_OPERATOR_TOKEN", "only-to-load-the-config")
    return dataclasses.replace(load_config(REPO / "deploy" / "agent-mesh.yaml"), path=config)


def render(prefix: Path = Path("/")) -> str:
    """The generated file, for an installation under `prefix` (scripts/deploy --prefix)."""

    def at(path: Path) -> Path:
        return prefix / path.relative_to("/")

    loaded = installed(at(CONFIG))
    conf = supervisor_conf(
        loaded, at(HOME) / loaded.config_hash, logs=at(LOGS), python=str(at(PYTHON))
    )
    return HEADER + conf


if __name__ == "__main__":
    sys.stdout.write(render())
