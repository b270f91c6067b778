"""`agent-mesh check`: the config validates (done by loading it), and every stdio upstream's
command can be started as the worker will start it (in the server's `cwd`, by default the
config file's directory, with its `env` over ours). A CLI tool whose `working_dir` or `bin` is
missing is a warning: a config written for another machine (the Go project's examples) runs."""

from __future__ import annotations

import os
import sys

from agent_mesh.config import LoadedConfig
from workers import cli_runner
from workers.commands import command_problem


def problems(loaded: LoadedConfig) -> list[str]:
    out = []
    for i, server in enumerate(loaded.config.mcp_servers):
        if server.transport != "stdio" or not server.command or server.workers == 0:
            continue  # served elsewhere (workers: 0): its command runs on another host
        cwd = server.cwd or str(loaded.path.parent)
        problem = command_problem(server.command, cwd, {**os.environ, **server.env})
        if problem is not None:
            out.append(f"{loaded.path}: mcp_servers[{i}] ({server.name}): {problem}")
    return out


def warnings(loaded: LoadedConfig) -> list[str]:
    out = list(loaded.warnings)
    for i, tool in enumerate(loaded.config.cli_tools):
        cwd = tool.working_dir or "."
        path = cli_runner.environment(tool.env)["PATH"]
        if tool.workers and not os.path.isdir(cwd):
            out.append(f"cli_tools[{i}] ({tool.name}): working_dir {cwd} is not a directory: its "
                       "calls will fail until it exists")
        elif tool.workers and cli_runner.resolve_bin(tool.bin, cwd, path) is None:
            out.append(f"cli_tools[{i}] ({tool.name}): bin {tool.bin!r} not found"
                       + ("" if "/" in tool.bin else " on PATH") + ": its calls will fail until it is installed")
    return out


def check(loaded: LoadedConfig) -> int:
    for warning in warnings(loaded):
        print(f"warning: {warning}")
    found = problems(loaded)
    for problem in found:
        print(f"agent-mesh: {problem}", file=sys.stderr)
    if found:
        return 1
    config = loaded.config
    print(f"{loaded.path}: ok ({len(config.mcp_servers)} servers, {len(config.cli_tools)} cli tools, "
          f"{len(config.openapi)} openapi, {len(config.policies)} policies)")
    return 0
