"""A `cli_tools:` entry as a tool source (workers/tool_source.py): one tool per declared command
(`<name>.<command>`), and unless `strict`, any other subcommand (`terraform.init`,
`gh.pr.list`) and the Go project's catch-all `<name>.__dispatch` (which the gateway turns into
`<name>.<command>` before the policy sees it: gateway/catalog.py).

A call is checked and run by workers/cli_runner.py. Its result is `{stdout, stderr, exit_code}`
(plus `timed_out`, `truncated` when so) as structured content and as text; a non-zero exit or a
timeout is a tool result with `isError: true`. Refused arguments raise `ToolRefused` (a 400 to
the caller, nothing run); a binary that cannot be started is an `UpstreamError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from mesh_config.sources import CLI_DEFAULT_TIMEOUT, DISPATCH, SUBCOMMAND, CliTool
from workers import cli_runner
from workers.tool_source import LocalSource, ToolRefused, tool_result
from workers.upstream_types import LogCallback, ProgressCallback, UpstreamError

VERSION = version("agent-mesh")  # as installed, from pyproject.toml

CANNOT_RUN = -32000

_ARGS = {
    "type": "array",
    "items": {"type": "string"},
    "description": "arguments, passed as they are (each one word; no shell)",
}
_FLAGS = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean", "array"]},
    "description": 'named flags: {"n": 5} is -n 5, {"namespace": "prod"} is --namespace prod, '
    "true is the bare flag",
}


def _schema(command: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"args": _ARGS, "flags": _FLAGS}
    if command:
        properties = {
            "command": {
                "type": "string",
                "description": "the subcommand, e.g. init "
                "or pr.list (words joined by '.' or spaces)",
            },
            **properties,
        }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if command:
        schema["required"] = ["command"]
    return schema


class CliSource(LocalSource):
    kind = "cli"

    def __init__(self, tool: CliTool) -> None:
        super().__init__(tool.name)
        self.tool = tool
        self.identity(VERSION)
        for command, spec in tool.commands.items():
            words = command.replace(".", " ")
            allowed = (
                "any flags"
                if spec.allowed_args is None
                else "flags: " + (", ".join(spec.allowed_args) or "none")
            )
            self.tools.append(
                {
                    "name": command,
                    "inputSchema": _schema(),
                    "description": f"Run `{tool.bin} {words}` ({allowed}; timeout "
                    f"{spec.timeout_seconds:g}s)",
                }
            )
        if not tool.strict:
            self.tools.append(
                {
                    "name": DISPATCH,
                    "inputSchema": _schema(command=True),
                    "description": f"Run `{tool.bin} <command>`: any subcommand, also "
                    f"callable as {tool.name}.<command>",
                }
            )

    def knows(self, tool: str) -> bool:
        if tool in self.tool.commands:
            return True
        return not self.tool.strict and bool(SUBCOMMAND.fullmatch(tool))

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        tool = self.tool
        spec = tool.commands.get(name)
        allowed = spec.allowed_args if spec is not None else None
        limit = spec.timeout_seconds if spec is not None else CLI_DEFAULT_TIMEOUT
        cwd = tool.working_dir or os.getcwd()
        env = cli_runner.environment(tool.env)
        try:
            argv = cli_runner.build_argv(tool.bin, name, arguments, allowed)
        except cli_runner.Refused as exc:
            raise ToolRefused(str(exc)) from None
        if not os.path.isdir(cwd):
            raise UpstreamError(
                CANNOT_RUN, f"cannot run {tool.bin!r}: working_dir {cwd} is not a directory"
            )
        path = cli_runner.resolve_bin(tool.bin, cwd, env["PATH"])
        if path is None:
            raise UpstreamError(
                CANNOT_RUN,
                f"cannot run {tool.bin!r}: not found "
                + ("" if "/" in tool.bin else "on PATH ")
                + f"(working_dir {cwd})",
            )
        try:
            result = await cli_runner.run(
                [path, *argv[1:]],
                cwd=cwd,
                env=env,
                timeout=min(limit, timeout),
                max_output=tool.max_output_bytes,
            )
        except OSError as exc:
            raise UpstreamError(
                CANNOT_RUN, f"cannot run {tool.bin!r}: {exc.strerror or exc}"
            ) from None
        return _rendered(
            f"{tool.bin} {name.replace('.', ' ')}",
            result,
            min(limit, timeout),
            tool.max_output_bytes,
        )


def _rendered(what: str, result: cli_runner.RunResult, limit: float, kept: int) -> dict[str, Any]:
    structured: dict[str, Any] = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
    }
    if result.timed_out:
        structured["timed_out"] = True
    if result.truncated:
        structured["truncated"] = result.truncated
    parts = []
    if result.timed_out:
        parts.append(f"`{what}` timed out after {limit:g}s: its process group was killed")
    elif result.exit_code != 0:
        parts.append(f"`{what}` exited with code {result.exit_code}")
    for stream in ("stdout", "stderr"):
        text = structured[stream]
        if stream in result.truncated:
            text += f"\n[{stream} truncated: the first {kept} of {result.truncated[stream]} bytes]"
        if text:
            parts.append(text if stream == "stdout" and not parts else f"[{stream}]\n{text}")
    return tool_result(structured, "\n".join(parts), result.timed_out or result.exit_code != 0)
