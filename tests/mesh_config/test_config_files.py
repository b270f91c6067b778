"""Reading config files: YAML that cannot be read, a missing file, and `policy_dir` (its files
load in name order after the inline policies; a problem names its file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import ConfigError
from tests.mesh_config.config_files import ACTION_PROBLEM, load_error, write
from tests.support import REPO


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "port: 9090\nmcp_servers:\n  - name: [x\n",
            "invalid YAML: line 4, column 1: expected ',' or ']'",
            id="unclosed",
        ),
        pytest.param(
            "port: 9090\npolicies: a: b\n",
            "invalid YAML: line 2, column 12: mapping values are not allowed here",
            id="mapping-in-scalar",
        ),
        pytest.param("port: 1\n\tmcp_servers: []\n", "invalid YAML: line 2, column 1:", id="tab"),
        pytest.param("port: 1\n---\nport: 2\n", "invalid YAML: line 2, column 1:", id="two-docs"),
        pytest.param(
            "x: !!python/object:os.system y\n", "invalid YAML: line 1, column 4:", id="unsafe-tag"
        ),
        pytest.param(
            "port: 1\npolicies: []\nport: 2\n",
            "line 3: duplicate key 'port' (first at line 1)",
            id="duplicate-key",
        ),
        pytest.param("", "the top level must be a mapping; the file is empty", id="empty"),
        pytest.param("# only a comment\n", "the file is empty", id="only-comment"),
        pytest.param("- port: 1\n", "the top level must be a mapping; got list", id="list"),
        pytest.param("9090\n", "the top level must be a mapping; got int", id="scalar"),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: str) -> None:
    error = load_error(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'mesh.yaml'}: ")
    assert expected in str(error)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: file not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.file == tmp_path / "nope.yaml"


def test_a_supervisor_config_is_named_as_one() -> None:
    """The shipped supervisor config where a mesh config goes: one problem saying what it is,
    what takes it and which mesh config it names, not an `unknown key` per setting."""
    shown = str(REPO / "examples" / "supervisor.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(shown)
    expected = (
        f"{shown}: this is a supervisor config (supervisor: poll_interval, mesh_process, rules, "
        f"...), not a mesh config: run it with `agent-mesh supervisor --config {shown}`; its mesh "
        f"config (mesh_process.config) is {REPO / 'examples' / 'supervised.yaml'}"
    )
    assert info.value.problems == [expected]


def test_a_mesh_supervisor_section_with_a_typo_is_still_a_mesh_config(tmp_path: Path) -> None:
    error = load_error(tmp_path, "supervisor:\n  enabled: true\n  expose_contnt: false\n")
    expected = (
        f"{tmp_path / 'mesh.yaml'}: supervisor.expose_contnt: unknown key; "
        "did you mean 'expose_content'? (line 3)"
    )
    assert error.problems == [expected]
    only_rules = load_error(tmp_path, "supervisor:\n  rules: []\n", name="s.yaml")
    expected = (
        f"{tmp_path / 's.yaml'}: this is a supervisor config (supervisor: rules), not a mesh "
        f"config: run it with `agent-mesh supervisor --config {tmp_path / 's.yaml'}`"
    )
    assert only_rules.problems == [expected]


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


# --- policy_dir ----------------------------------------------------------------------------

POLICY = """\
name: {name}
agent: "{agent}"
rules:
  - tools: ["*"]
    action: {action}
"""


def test_missing_policy_dir_is_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "c.yaml", "policy_dir: nowhere/\n"))
    assert loaded.config.policies == []
    assert len(loaded.warnings) == 1
    assert "policy_dir" in loaded.warnings[0] and "nowhere" in loaded.warnings[0]
    assert "does not exist" in loaded.warnings[0]


def test_policy_dir_files_load_in_name_order_after_inline(tmp_path: Path) -> None:
    write(tmp_path, "pol/b_second.yaml", POLICY.format(name="second", agent="b", action="deny"))
    write(tmp_path, "pol/a_first.yml", POLICY.format(name="first", agent="a", action="allow"))
    write(tmp_path, "pol/README.md", "not a policy")
    write(tmp_path, "pol/.hidden.yaml", "garbage: [")
    path = write(
        tmp_path,
        "c.yaml",
        """\
        policy_dir: pol
        policies:
          - {name: inline, agent: "*"}
        """,
    )
    loaded = load_config(path)
    assert [p.name for p in loaded.config.policies] == ["inline", "first", "second"]
    assert loaded.config.policies[1].rules[0].action == "allow"
    assert loaded.warnings == []
    assert loaded.policy_dir_path == tmp_path.resolve() / "pol"


def test_policy_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "etc/policies/p.yaml", POLICY.format(name="p", agent="a", action="allow"))
    write(tmp_path, "etc/c.yaml", "policy_dir: policies/\n")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in load_config("etc/c.yaml").config.policies] == ["p"]


def test_error_in_policy_dir_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "pol/a.yaml", POLICY.format(name="a", agent="x", action="allow"))
    write(tmp_path, "pol/b.yaml", POLICY.format(name="b", agent="x", action="sometimes"))
    write(tmp_path, "pol/c.yaml", "name: c\nagent: x\nrules: [\n")
    path = write(tmp_path, "c.yaml", "policy_dir: pol\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert len(problems) == 2
    b_file, c_file = tmp_path / "pol" / "b.yaml", tmp_path / "pol" / "c.yaml"
    assert problems[0].startswith(f"{b_file}: rules[0].action: {ACTION_PROBLEM}")
    assert "(line 5)" in problems[0]
    assert problems[1].startswith(f"{c_file}: invalid YAML: line 4")


def test_policy_dir_file_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "pol/a.yaml", "- name: a\n")
    write(tmp_path, "pol/b.yaml", "name: b\nagent: x\ncolor: red\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "c.yaml", "policy_dir: pol\n"))
    message = str(info.value)
    assert f"{tmp_path / 'pol' / 'a.yaml'}: the top level must be a mapping; got list" in message
    assert f"{tmp_path / 'pol' / 'b.yaml'}: color: unknown key" in message


def test_duplicate_policy_names_across_inline_and_policy_dir(tmp_path: Path) -> None:
    write(tmp_path, "pol/one.yaml", POLICY.format(name="claude", agent="c", action="allow"))
    write(tmp_path, "pol/two.yaml", POLICY.format(name="other", agent="o", action="allow"))
    write(tmp_path, "pol/zzz.yaml", POLICY.format(name="other", agent="p", action="deny"))
    path = write(tmp_path, "c.yaml", "policy_dir: pol\npolicies:\n  - {name: claude, agent: x}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    one, two, zzz = (tmp_path / "pol" / n for n in ("one.yaml", "two.yaml", "zzz.yaml"))
    assert info.value.problems == [
        f"{one}: name: duplicate policy name 'claude' (also {path}: policies[0])",
        f"{zzz}: name: duplicate policy name 'other' (also {two})",
    ]


def test_policy_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "pol", "not a dir")
    with pytest.raises(ConfigError, match="policy_dir: cannot list"):
        load_config(write(tmp_path, "c.yaml", "policy_dir: pol\n"))


def test_condition_v2_loads_from_policy_dir(tmp_path: Path) -> None:
    write(
        tmp_path / "policies",
        "dev.yaml",
        """\
        name: dev
        agent: claude
        rules:
          - tools: [fs.*]
            action: allow
            condition:
              any:
                - {field: params.path, operator: within, value: /srv/data/}
                - {field: tool, operator: in, value: [fs.list_allowed_directories]}
        """,
    )
    loaded = load_config(write(tmp_path, "mesh.yaml", "policy_dir: policies\n"))
    condition = loaded.config.policies[0].rules[0].condition
    assert condition is not None and condition.any is not None
    assert condition.any[0].compiled == "/srv/data"
