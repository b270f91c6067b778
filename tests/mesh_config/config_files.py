"""Config files for the mesh_config tests: written to a temp dir, loaded, or refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import ConfigError

ACTION_PROBLEM = "Input should be 'allow', 'deny' or 'human_approval'"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path, text: str, name: str = "mesh.yaml") -> ConfigError:
    path = write(directory, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == path
    assert info.value.problems
    return info.value
