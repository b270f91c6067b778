"""The config in force, kept: `<state>/last-good-config.json` (owner-only) holds the running
config with the policies in force (gateway/reload.py saves it). A process of the tree that
restarts while the file on disk is invalid starts on it (`last_good`) instead of failing, which
would bring the whole mesh down; the error stays visible in /health.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from bus.state_dir import StateDir
from mesh_config.model import Config, ConfigError, LoadedConfig

log = logging.getLogger(__name__)

FALLBACK = "the config file is invalid; running on the last valid config of this mesh"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def save_snapshot(loaded: LoadedConfig) -> None:
    """Keep `loaded` as the last valid config of its mesh (owner-only: it holds expanded values)."""
    target = StateDir(loaded.state_dir()).last_good_config
    tmp = target.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "saved_at": now(),
                    "config": loaded.config.model_dump(
                        mode="json", by_alias=True, exclude_unset=True
                    ),
                },
                out,
            )
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("cannot keep the last valid config in %s: %s", target, exc)


def last_good(path: str | Path, error: ConfigError) -> LoadedConfig | None:
    """The last valid config of the mesh of `path` (None if there is none), with a warning that
    starts with FALLBACK and says what is wrong with the file."""
    absolute = Path(path).expanduser().resolve()
    state = LoadedConfig(config=Config(), path=absolute).state_dir()
    try:
        data = json.loads(StateDir(state).last_good_config.read_text())
        config = Config.model_validate(data["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return LoadedConfig(
        config=config,
        path=absolute,
        warnings=[f"{FALLBACK} (kept {data.get('saved_at')}): {error}"],
    )
