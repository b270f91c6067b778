"""Fixtures for the gateway tests (the stand-ins themselves: tests/gateway/fakes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.fakes import Governed


@pytest.fixture
def mesh(tmp_path: Path) -> Governed:
    """The governed path with a real policy engine and approval service; only the bus is a
    stand-in."""
    return Governed(tmp_path)
