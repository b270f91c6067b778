"""Fixtures for every end-to-end module (a module's own fixture of the same name wins). The mesh
itself: tests/e2e/mesh.py (`Mesh`, and `running` for a module's mesh)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for a filesystem server to serve, with one file: a.txt, "alpha"."""
    root = tmp_path_factory.mktemp("demo")
    (root / "a.txt").write_text("alpha")
    return root
