"""`${VAR}` in config values (mesh_config/env.py): expanded, defaulted, and an unset one named
with its field and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import ConfigError
from tests.mesh_config.config_files import load_error, write


def test_environment_variables_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TEST_TOKEN", "s3cret-token")
    monkeypatch.setenv("MESH_TEST_DIR", "/srv/demo")
    monkeypatch.setenv("MESH_TEST_EMPTY", "")
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    c = load_config(
        write(
            tmp_path,
            "c.yaml",
            """\
        auth: {operator_token: "${MESH_TEST_TOKEN}"}
        mcp_servers:
          - name: fs
            command: "${MESH_TEST_UNSET:-npx}"
            args:
              - "--root=${MESH_TEST_DIR}/files"
              - "$${NOT_EXPANDED}"
              - "${MESH_TEST_EMPTY:-fallback}"
            env: {TOKEN: "Bearer ${MESH_TEST_TOKEN}"}
        """,
        )
    ).config
    assert c.auth.operator_token == "s3cret-token"
    fs = c.mcp_servers[0]
    assert fs.command == "npx"
    assert fs.args == ["--root=/srv/demo/files", "${NOT_EXPANDED}", "fallback"]
    assert fs.env == {"TOKEN": "Bearer s3cret-token"}


def test_an_empty_operator_token_means_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    loaded = load_config(
        write(tmp_path, "c.yaml", "auth: {operator_token: '${MESH_TEST_UNSET:-}'}\n")
    )
    assert loaded.config.auth.operator_token is None


def test_unset_variable_names_variable_field_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    monkeypatch.setenv("MESH_TEST_SHORT", "short")
    error = load_error(
        tmp_path,
        """\
        port: 9090
        auth:
          operator_token: ${MESH_TEST_UNSET}
        mcp_servers:
          - {name: fs, command: x, args: ["${MESH_TEST_UNSET}", "${oops"]}
        """,
    )
    assert error.problems == [
        (
            f"{tmp_path / 'mesh.yaml'}: auth.operator_token: environment variable MESH_TEST_UNSET "
            "is "
            "not set "
            "(export it, or write ${MESH_TEST_UNSET:-default} for a default) (line 3)"
        ),
        (
            f"{tmp_path / 'mesh.yaml'}: mcp_servers[0] (name=fs).args[0]: environment variable "
            "MESH_TEST_UNSET is not set (export it, or write ${MESH_TEST_UNSET:-default} for a "
            "default) (line 5)"
        ),
        (
            f"{tmp_path / 'mesh.yaml'}: mcp_servers[0] (name=fs).args[1]: invalid variable "
            "reference "
            "at "
            "'${oops' (write ${NAME}, ${NAME:-default}, or $${ for a literal ${) (line 5)"
        ),
    ]
    # a token too short is reported without echoing it
    short = load_error(
        tmp_path, "auth: {operator_token: '${MESH_TEST_SHORT}'}\n", name="short.yaml"
    )
    assert "auth.operator_token: String should have at least 8 characters" in str(short)
    assert "short'" not in str(short)


def test_policy_dir_files_are_expanded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TEST_AGENT", "claude")
    write(tmp_path, "policies/p.yaml", "name: p\nagent: ${MESH_TEST_AGENT}\n")
    loaded = load_config(write(tmp_path, "c.yaml", "policy_dir: policies\n"))
    assert loaded.config.policies[0].agent == "claude"
    write(tmp_path, "policies/q.yaml", "name: q\nagent: ${MESH_TEST_UNSET}\n")
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yaml")
    assert "policies/q.yaml: agent: environment variable MESH_TEST_UNSET is not set" in str(
        info.value
    )
