"""Fixtures for every end-to-end module (a module's own fixture of the same name wins), and the
meshes several modules share. The mesh itself: tests/e2e/mesh.py (`Mesh`, `running` for a
module's own mesh, `SharedMeshes`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def fidelity_mesh(
    request: pytest.FixtureRequest,
    shared_meshes: SharedMeshes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    """The mesh of tests/e2e/test_mcp_fidelity*.py (tests/e2e/fidelity.py)."""
    with shared_meshes.use(
        request, lambda: fidelity.fidelity_mesh(tmp_path_factory.mktemp("fidelity"))
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def faults_mesh(
    request: pytest.FixtureRequest,
    shared_meshes: SharedMeshes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    """The mesh of tests/e2e/test_faults*.py (tests/e2e/faults.py)."""
    with shared_meshes.use(
        request,
        lambda: faults.faults_mesh(
            tmp_path_factory.mktemp("mesh"), tmp_path_factory.mktemp("demo")
        ),
        timeout=60,
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def go_contract_mesh(
    request: pytest.FixtureRequest,
    shared_meshes: SharedMeshes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    """The mesh of tests/e2e/test_go_contract*.py (tests/e2e/go_contract.py)."""
    with shared_meshes.use(
        request, lambda: go_contract.go_contract_mesh(tmp_path_factory.mktemp("mesh"))
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def everything_mesh(
    request: pytest.FixtureRequest,
    shared_meshes: SharedMeshes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    """server-everything, every tool allowed to every agent: the mesh of test_mcp_fast.py and
    test_mcp_sampling.py (one start for both; neither reconfigures it)."""
    config = {
        "mcp_servers": [
            {"name": "everything", "command": npm_server("everything"), "args": ["stdio"]}
        ],
        "policies": [{"name": "p", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    with shared_meshes.use(request, lambda: Mesh(tmp_path_factory.mktemp("mesh"), config)) as mesh:
        yield mesh
