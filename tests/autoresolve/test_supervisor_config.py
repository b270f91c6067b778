"""The supervisor config file: the shipped example and compat.md's example load, rules compile
once, and every mistake is reported as `<file>: <path>: <problem> (line N)`."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoresolve.config import Settings, load
from mesh_config.file import SUPERVISOR_FILE_KEYS, load_config
from mesh_config.model import ConfigError, SupervisorConfig
from tests.support import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supervisor.yaml"
    path.write_text(text)
    return path


def test_shipped_example_loads() -> None:
    loaded = load(REPO / "examples" / "supervisor.yaml")
    assert loaded.settings.rules
    assert loaded.settings.model is not None
    mesh = load_config(loaded.mesh_config_path or "")  # the mesh config it manages
    assert mesh.config.supervisor.enabled
    rules = loaded.settings.rules
    demo = {"tool": "filesystem.write_file", "injection_risk": False}
    assert (
        next(r for r in rules if r.applies(demo | {"params": {"path": "/tmp/mesh-demo/a"}})).action
        == "approve"
    )
    assert not any(r.applies(demo | {"params": {"path": "/tmp/mesh-demo/../etc/a"}}) for r in rules)


def test_compat_example(tmp_path: Path) -> None:
    loaded = load(
        write(
            tmp_path,
            """
supervisor:
  mesh_url: http://localhost:9090
  poll_interval: 5s
  mesh_process: {enabled: true, command: agent-mesh, config: mesh.yaml}
  ollama: {enabled: true, url: http://localhost:11434, model: "qwen3:14b", timeout: 60s}
  rules:
    - name: project-scope
      condition: "params.path starts_with /home/user"
      action: approve
      confidence: 0.95
""",
        )
    )
    settings = loaded.settings
    assert settings.poll_seconds == 5.0
    assert settings.model is not None and settings.model.provider == "ollama"
    assert settings.model.timeout_seconds == 60.0
    assert loaded.mesh_config_path == tmp_path / "mesh.yaml"
    assert settings.mesh_process.argv == ["agent-mesh"]
    (rule,) = settings.rules
    assert rule.applies({"tool": "fs.write_file", "params": {"path": "/home/user/x"}})
    assert not rule.applies({"tool": "fs.write_file", "params": {"path": "/home/user/../etc"}})


def test_defaults_and_derived_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mesh.yaml").write_text("port: 9311\nhost: 0.0.0.0\n")
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MESH_OPERATOR_TOKEN", raising=False)
    loaded = load(
        write(
            tmp_path,
            """
supervisor:
  operator_token: from-the-file
  mesh_process: {enabled: true, config: mesh.yaml, command: "python -m agent_mesh"}
  rules:
    - {name: all-reads, tools: ["fs.read_*"], action: approve}
""",
        )
    )
    assert loaded.mesh_url() == "http://127.0.0.1:9311"  # the managed mesh's own port
    assert loaded.settings.mesh_process.argv == ["python", "-m", "agent_mesh"]
    assert loaded.memory_path.parent.parent == tmp_path / "home" / "supervisor"
    assert loaded.settings.model is None
    assert loaded.operator_token == "from-the-file"
    monkeypatch.setenv("MESH_OPERATOR_TOKEN", "from-the-environment")
    assert loaded.operator_token == "from-the-environment"
    (rule,) = loaded.settings.rules
    assert rule.applies({"tool": "fs.read_file", "params": {}})
    assert not rule.applies({"tool": "fs.write_file", "params": {}})


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            (
                "supervisor:\n  rules:\n    - "
                "{name: a, condition: 'params.path startswith /x', action: approve}\n"
            ),
            [
                (
                    "supervisor.rules[0] (name=a).condition: column 13: expected an operator after "
                    "'params.path'"
                ),
                "did you mean 'starts_with'? (line 3)",
            ],
        ),
        (
            "supervisor:\n  rules:\n    - {name: a, action: aprove}\n",
            [
                (
                    "supervisor.rules[0] (name=a).action: Input should be 'approve', 'deny' or "
                    "'escalate', got 'aprove' (line 3)"
                )
            ],
        ),
        (
            "supervisor:\n  rules:\n    - {name: a, action: approve, confidence: 1.5}\n",
            ["supervisor.rules[0] (name=a).confidence: Input should be less than or equal to 1"],
        ),
        (
            "supervisor:\n  rules:\n    - {name: a, action: approve, condtion: x}\n",
            ["supervisor.rules[0] (name=a).condtion: unknown key; did you mean 'condition'?"],
        ),
        (
            (
                "supervisor:\n  rules:\n    - {name: a, action: approve}\n    - "
                "{name: a, action: deny}\n"
            ),
            ["supervisor: rules[1]: duplicate rule name 'a' (also rules[0])"],
        ),
        (
            "supervisor:\n  poll_interval: soon\n",
            ["supervisor.poll_interval: invalid duration 'soon'"],
        ),
        (
            "supervisor:\n  mesh_url: localhost:9090\n",
            ["supervisor.mesh_url: must be an http:// or https:// URL"],
        ),
        (
            "supervisor:\n  mesh_process: {enabled: true}\n",
            ["supervisor.mesh_process: config: required when enabled"],
        ),
        (
            "supervisor:\n  llm: {model: m, provider: vllm}\n",
            ["supervisor.llm.provider: Input should be 'ollama' or 'openai_compatible'"],
        ),
        ("supervisor:\n  llm: {url: http://x}\n", ["supervisor.llm.model: Field required"]),
        (
            "supervisor:\n  llm: {model: a}\n  ollama: {model: b}\n",
            ["llm: and ollama: are the same section"],
        ),
        (
            "supervisor:\n  operator_token: short\n",
            ["supervisor.operator_token: String should have at least 8"],
        ),
        ("rules: []\n", ["supervisor: Field required", "rules: unknown key"]),
        ("supervisor: [\n", ["invalid YAML: line 2"]),
    ],
)
def test_mistakes_are_reported_with_file_path_and_line(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    message = str(caught.value)
    for problem in problems:
        assert problem in message
    assert "'short'" not in message  # a token is never echoed


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.yaml")


def test_a_mesh_config_is_named_as_one() -> None:
    """The shipped mesh config where the supervisor's goes: one problem saying what it is and
    what takes it, not an `unknown key` per mesh setting."""
    shown = str(REPO / "examples" / "supervised.yaml")
    with pytest.raises(ConfigError) as caught:
        load(shown)
    expected = (
        f"{shown}: this is a mesh config (port, trace_file, auth, ...), not a supervisor config: "
        f"run it with `agent-mesh serve --config {shown}`, or name it in a supervisor config's "
        "mesh_process.config (examples/supervisor.yaml)"
    )
    assert caught.value.problems == [expected]


def test_the_mesh_loader_knows_the_supervisor_files_keys() -> None:
    """mesh_config tells a supervisor config by these keys (it may not import autoresolve)."""
    mesh_section = set(SupervisorConfig.model_fields)
    assert set(Settings.model_fields) - mesh_section == SUPERVISOR_FILE_KEYS
    assert not SUPERVISOR_FILE_KEYS & mesh_section
