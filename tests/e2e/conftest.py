"""Fixtures for every end-to-end module (a module's own fixture of the same name wins), and the
meshes several modules share. The mesh itself: tests/e2e/mesh.py (`Mesh`, `running` for a
module's own mesh, `SharedMeshes`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import faults, fidelity, go_contract
from tests.e2e.mesh import Mesh, SharedMeshes
from tests.support import npm_server


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for a filesystem server to serve, with one file: a.txt, "alpha"."""
    root = tmp_path_factory.mktemp("demo")
    (root / "a.txt").write_text("alpha")
    return root


@pytest.fixture(scope="session")
def shared_meshes() -> Iterator[SharedMeshes]:
    meshes = SharedMeshes()
    yield meshes
    meshes.close()


def _shared_mesh(
    name: str, doc: str, make: Callable[[pytest.TempPathFactory], Mesh], **start: Any
) -> Any:
    """The module-scoped fixture `name` (`doc`): the mesh `make(tmp_path_factory)` gives (not
    started), started once for every module of this run that asks for `name`
    (`SharedMeshes.use`, `start`: `Mesh.start`'s options)."""

    def fixture(
        request: pytest.FixtureRequest,
        shared_meshes: SharedMeshes,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Mesh]:
        with shared_meshes.use(request, lambda: make(tmp_path_factory), **start) as mesh:
            yield mesh

    fixture.__doc__ = doc
    return pytest.fixture(fixture, scope="module", name=name)


def _everything(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    config = {
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]}
        ],
        "policies": [{"name": "p", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    return Mesh(tmp_path_factory.mktemp("mesh"), config)


fidelity_mesh = _shared_mesh(
    "fidelity_mesh",
    "The mesh of tests/e2e/test_mcp_fidelity*.py (tests/e2e/fidelity.py).",
    lambda tmp: fidelity.fidelity_mesh(tmp.mktemp("fidelity")),
)
faults_mesh = _shared_mesh(
    "faults_mesh",
    "The mesh of tests/e2e/test_faults*.py (tests/e2e/faults.py).",
    lambda tmp: faults.faults_mesh(tmp.mktemp("mesh"), tmp.mktemp("demo")),
    timeout=60,
)
go_contract_mesh = _shared_mesh(
    "go_contract_mesh",
    "The mesh of tests/e2e/test_go_contract*.py (tests/e2e/go_contract.py).",
    lambda tmp: go_contract.go_contract_mesh(tmp.mktemp("mesh")),
)
everything_mesh = _shared_mesh(
    "everything_mesh",
    "server-everything, every tool allowed to every agent: the mesh of test_mcp_fast.py and "
    "test_mcp_sampling.py (one start for both; neither reconfigures it).",
    _everything,
)
