"""The reloader's pure parts: what needs a restart, the generation kept across restarts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from gateway.reload import Reloader, needs_restart
from mesh_config.file import load_config
from mesh_config.model import LoadedConfig


def config(tmp: Path, text: str) -> LoadedConfig:
    path = tmp / "mesh.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


BASE = """\
    mcp_servers:
      - {name: a, command: x}
      - {name: b, command: y}
    policies:
      - {name: p, agent: "*", rules: [{tools: ["*"], action: allow}]}
    """


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("", []),
        ("policies:\n  - {name: q, agent: '*'}\n", []),
        ("port: 1234\n", ["port changed: restart the mesh to apply it"]),
        (
            "mcp_servers:\n  - {name: a, command: z}\n  - {name: c, command: y}\n",
            [
                (
                    "mcp_servers changed (added: c; removed: b; changed: a): restart the mesh to "
                    "apply it"
                )
            ],
        ),
        (
            "cli_tools:\n  - {name: git, bin: git}\n",
            ["cli_tools changed (added: git): restart the mesh to apply it"],
        ),
    ],
)
def test_needs_restart(tmp_path: Path, change: str, expected: list[str]) -> None:
    old = config(tmp_path, BASE)
    merged = {**yaml.safe_load(textwrap.dedent(BASE)), **yaml.safe_load(change or "{}")}
    new = config(tmp_path, yaml.safe_dump(merged))
    assert needs_restart(old, new) == expected


def test_generation_is_kept_for_the_same_policies_and_grows_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path / "home"))
    loaded = config(tmp_path, BASE)
    loaded.state_dir().mkdir(parents=True)
    first = Reloader(loaded, "ipc:///nonexistent", None)
    assert first.current.generation == 1
    first._persist()
    assert Reloader(loaded, "ipc:///nonexistent", None).current.generation == 1  # same set: same
    changed = config(tmp_path, BASE.replace("action: allow", "action: deny"))
    assert Reloader(changed, "ipc:///nonexistent", None).current.generation == 2
