"""The MCP fidelity tests' mesh (tests/e2e/test_mcp_fidelity*.py share one: the
`fidelity_mesh` fixture) and their clients.

Upstreams: the real npm server-everything, behind a `tee` of its stdin (to see what the mesh
sent it, e.g. `notifications/cancelled`), and `dyn`, a minimal MCP server written here (stdio
JSON-RPC, no SDK: it starts in milliseconds) for what server-everything cannot do on demand: add
a tool at run time (`tools/list_changed`) and emit log messages at chosen levels, interleaved
with progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway.mcp_sdk import create_mcp_http_client
from tests.e2e.mesh import Mesh
from tests.support import npm_server

DYN_SERVER = r"""
import json, sys

TOOLS = {
    "grow": {"name": "grow", "description": "add a tool named `name`",
             "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}},
    "log": {"name": "log", "description": "log at each of `levels`, with progress after each",
            "inputSchema": {"type": "object",
                            "properties": {"levels": {"type": "array"},
                                           "tag": {"type": "string"}}}},
}


def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def text(value):
    return {"content": [{"type": "text", "text": value}]}


def call(params):
    name, args = params["name"], params.get("arguments") or {}
    if name == "grow":
        TOOLS[args["name"]] = {"name": args["name"], "description": "grown",
                               "inputSchema": {"type": "object"}}
        send({"method": "notifications/tools/list_changed"})
        return text("grew " + args["name"])
    if name == "log":
        token = (params.get("_meta") or {}).get("progressToken")
        for i, level in enumerate(args["levels"]):
            send({"method": "notifications/message",
                  "params": {"level": level, "logger": "dyn", "data": args["tag"] + " " + level}})
            if token is not None:
                send({"method": "notifications/progress",
                      "params": {"progressToken": token, "progress": i + 1,
                                 "total": len(args["levels"])}})
        return text("logged " + args["tag"])
    return text(name + " called")


for line in sys.stdin:
    request = json.loads(line)
    method, rid = request.get("method"), request.get("id")
    if rid is None:
        continue  # notifications
    if method == "initialize":
        result = {"protocolVersion": request["params"]["protocolVersion"],
                  "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                  "serverInfo": {"name": "dyn", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": list(TOOLS.values())}
    elif method == "tools/call":
        result = call(request["params"])
    elif method in ("ping", "logging/setLevel"):
        result = {}
    else:
        send({"id": rid, "error": {"code": -32601, "message": "Method not found"}})
        continue
    send({"id": rid, "result": result})
"""


def fidelity_mesh(tmp: Path) -> Mesh:
    """Not started: server-everything behind a `tee` of its stdin (`mesh.wire`), and `dyn`."""
    wire = tmp / "to-everything.jsonl"
    dyn = tmp / "dyn_server.py"
    dyn.write_text(DYN_SERVER)
    config = {
        "mcp_servers": [
            {
                "name": "everything",
                "command": "sh",
                # -a: the worker and its warm spare each run a tee on the one file; without
                # O_APPEND each writes at its own offset, over the other's lines.
                "args": [
                    "-c",
                    'tee -a "$0" | exec "$1" stdio',
                    str(wire),
                    npm_server("everything"),
                ],
            },
            {"name": "dyn", "command": sys.executable, "args": [str(dyn)]},
        ],
        "policies": [
            {
                "name": "reader",
                "agent": "reader",
                "rules": [
                    {"tools": ["everything.resource:demo://resource/static/*"], "action": "deny"},
                    {"tools": ["everything.prompt:completable-prompt"], "action": "deny"},
                    {"tools": ["everything.*", "dyn.*"], "action": "allow"},
                ],
            },
            {"name": "default", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }
    mesh = Mesh(tmp, config)
    mesh.wire = wire  # type: ignore[attr-defined]
    return mesh


class Seen:
    """What one client heard, in order: log messages, progress, other notifications."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.events.append(("log", (params.level, params.logger, params.data)))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(("progress", progress))

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification | types.Notification) or hasattr(
            message, "method"
        ):
            self.events.append(("notification", getattr(message, "method", type(message).__name__)))

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]

    def clear(self) -> None:
        self.events.clear()


@asynccontextmanager
async def http_client(
    mesh: Mesh, seen: Seen | None = None, agent: str = "reader"
) -> AsyncIterator[Client]:
    seen = seen or Seen()
    http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{agent}"})
    async with (
        http,
        Client(
            streamable_http_client(f"{mesh.url}/mcp", http_client=http),
            mode="legacy",
            logging_callback=seen.log,
            message_handler=seen.message,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def stdio_client(mesh: Mesh, seen: Seen, agent: str = "reader") -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        env={**os.environ, "AGENT_MESH_HOME": str(mesh.home)},
        args=["-m", "agent_mesh", "--mcp", "--config", str(mesh.config_path), "--mcp-agent", agent],
    )
    async with Client(
        params, mode="legacy", logging_callback=seen.log, message_handler=seen.message
    ) as client:
        yield client


def traces(mesh: Mesh, **query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = mesh.http.get("/traces", params=query).json()
    return found


async def until(predicate: Any, timeout: float, what: str) -> Any:
    """`wait_until` that lets the event loop run (the SDK clients' transports live on it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
