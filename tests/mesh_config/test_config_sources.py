"""Tool sources besides MCP servers (mesh_config/sources.py): `openapi:` entries, the --openapi
flag, and `agent-mesh check` reading their documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import ConfigError
from tests.mesh_config.config_files import write


def test_openapi_sources_and_the_openapi_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        "c.yaml",
        """\
        openapi:
          - {file: specs/pets.yaml, name: pets, headers: {X-Key: k}, timeout: 5s}
        """,
    )
    loaded = load_config(config)
    (pets,) = loaded.config.sources()
    assert (pets.name, pets.prefix, pets.kind, pets.timeout_seconds) == (
        "pets",
        "pets.",
        "openapi",
        5.0,
    )
    assert loaded.config.openapi[0].file == str(tmp_path.resolve() / "specs" / "pets.yaml")
    # `agent-mesh --openapi SPEC --backend URL` (the command sets these for the whole tree)
    monkeypatch.setenv("AGENT_MESH_OPENAPI", "https://api.example.com/openapi.json")
    monkeypatch.setenv("AGENT_MESH_OPENAPI_BACKEND", "http://localhost:8080")
    flagged = load_config(config).config
    assert [(s.name, s.prefix) for s in flagged.sources()] == [("pets", "pets."), ("openapi-1", "")]
    assert flagged.openapi[1].url == "https://api.example.com/openapi.json"
    assert flagged.openapi[1].backend_url == "http://localhost:8080"
    monkeypatch.setenv("AGENT_MESH_OPENAPI_BACKEND", "localhost:8080")
    with pytest.raises(
        ConfigError, match="--openapi https://api.example.com/openapi.json: --backend: must be"
    ):
        load_config(config)


def test_check_reads_openapi_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent_mesh.check import check

    spec = Path(__file__).resolve().parents[2] / "examples" / "openapi" / "petstore.yaml"
    ok = load_config(
        write(
            tmp_path, "ok.yaml", f"openapi:\n  - {{file: {spec}}}\n  - {{file: {spec}, name: b}}\n"
        )
    )
    assert check(ok) == 0
    clash = load_config(
        write(tmp_path, "clash.yaml", f"openapi:\n  - {{file: {spec}}}\n  - {{file: {spec}}}\n")
    )
    assert check(clash) == 1
    assert "openapi[1]: 7 of its tools are also made by openapi[0]" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"swagger": "1.2"}')
    bad = load_config(write(tmp_path, "bad.yaml", "openapi:\n  - {file: bad.json}\n"))
    assert check(bad) == 1
    assert "bad.json: not an OpenAPI 3.x or Swagger 2.0 document" in capsys.readouterr().err
