"""Shared test helpers: the pinned npm upstreams, free ports, process trees, waiting."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import mcp_types
import pytest

from agent_mesh.proctree import alive, cmdline, descendants

# the tests' process helpers are re-exported from here
__all__ = [
    "NODE_BIN",
    "REPO",
    "alive",
    "cmdline",
    "descendants",
    "free_port",
    "npm_server",
    "text_of",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
NODE_BIN = REPO / "node_modules" / ".bin"


def npm_server(name: str) -> str:
    """Path of a pinned upstream MCP server from package.json (installed by `npm ci`)."""
    path = NODE_BIN / f"mcp-server-{name}"
    if not path.exists():
        pytest.fail(f"{path} missing: run `npm ci` in {REPO} (scripts/test does)")
    return str(path)


def text_of(result: mcp_types.CallToolResult) -> str:
    """The text of an MCP tool result's first content item (which a test expects to be text)."""
    item = result.content[0]
    assert isinstance(item, mcp_types.TextContent), item
    return item.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
