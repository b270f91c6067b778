"""The state directory as the CLI makes it: owner-only, with its logs directory (which
$AGENT_MESH_LOGS may put elsewhere, e.g. /var/log/agent-mesh). Its paths: bus/state_dir.py."""

from __future__ import annotations

import os
from pathlib import Path

from agent_mesh.errors import UserError
from bus.state_dir import StateDir
from mesh_config.model import LoadedConfig

ENV_LOGS = "AGENT_MESH_LOGS"  # where the tree's logs go (default <state>/logs)


def logs_dir(state: Path) -> Path:
    return Path(os.environ[ENV_LOGS]) if os.environ.get(ENV_LOGS) else StateDir(state).logs


def make_state_dir(loaded: LoadedConfig) -> Path:
    """The mesh's state directory (and its logs directory), created owner-only if needed."""
    state = loaded.state_dir()
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs_dir(state).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UserError(
            f"cannot create the state directory {state}: {exc.strerror or exc}; "
            "set AGENT_MESH_HOME to a directory of yours"
        ) from None
    return state
