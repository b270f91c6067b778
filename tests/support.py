"""Shared test helpers: the pinned npm upstreams, free ports, process trees, waiting."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_mesh.proctree import alive, cmdline, descendants  # noqa: F401 - the tests' process helpers

REPO = Path(__file__).resolve().parent.parent
NODE_BIN = REPO / "node_modules" / ".bin"


def npm_server(name: str) -> str:
    """Path of a pinned upstream MCP server from package.json (installed by `npm ci`)."""
    path = NODE_BIN / f"mcp-server-{name}"
    if not path.exists():
        pytest.fail(f"{path} missing: run `npm ci` in {REPO} (scripts/test does)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
