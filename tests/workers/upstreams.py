"""The npm reference MCP servers for the workers tests (pinned in package.json, run with
`node` straight from node_modules/.bin: deterministic, no npm wrapper, ~0.5 s to start; `npm ci`
in the repo root installs them, scripts/test does), and what the tests do with them."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import pytest

from tests.support import REPO, npm_server
from workers.mcp_client import UpstreamClient
from workers.upstream_types import UpstreamSpec

EVERYTHING = npm_server("everything")
FILESYSTEM = npm_server("filesystem")
# A missing node is an install problem (.ci/run installs it): the module fails, never skips.
NODE = shutil.which("node") or pytest.fail("node not found: install nodejs (.ci/run does)")

LONG_OP = "trigger-long-running-operation"


def everything_spec(
    *, command: str | None = None, args: tuple[str, ...] | None = None
) -> UpstreamSpec:
    return UpstreamSpec(
        name="everything",
        transport="stdio",
        command=command or str(NODE),
        args=args if args is not None else (str(EVERYTHING), "stdio"),
        cwd=str(REPO),
    )


async def mid_call(
    client: UpstreamClient, duration: float = 10, **options: Any
) -> asyncio.Task[dict[str, Any]]:
    """A long call the server is running (its first progress, after a tenth of `duration`, has
    arrived): the moment to kill or cancel it."""
    running = asyncio.Event()

    async def progressed(params: dict[str, Any]) -> None:
        running.set()

    call = asyncio.create_task(
        client.call_tool(
            LONG_OP, {"duration": duration, "steps": 10}, 30, on_progress=progressed, **options
        )
    )
    await asyncio.wait_for(running.wait(), 10)
    return call


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
