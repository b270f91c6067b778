"""`agent-mesh discover --config c.yaml [--generate-policy [--agent NAME] [--output FILE]]`:
start each tool source of the config the way its worker would, list its tools with a one-line
description, close it. No mesh, no bus: it works whether or not a mesh runs.

Source-agnostic: every source is "something with `start()`, `tools` (MCP tool dicts) and
`close()`" — an MCP server's `UpstreamClient`, and whatever else `_openers` yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent_mesh.errors import UserError
from agent_mesh.starter_policy import Tool, one_line, render
from mesh_config.model import LoadedConfig

START_TIMEOUT = 30.0  # s for one source to start and list its tools


class ToolSource(Protocol):
    tools: list[dict[str, Any]]

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Found:
    name: str
    label: str  # `MCP server "filesystem"`
    prefix: str  # canonical tool prefix, `<name>.`
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _openers(loaded: LoadedConfig) -> list[tuple[str, str, str, Callable[[], ToolSource]]]:
    """(name, label, canonical prefix, opener) for every tool source of the config: what its
    upstream worker would start (workers/upstream.py `source_for`)."""
    from workers.upstream import source_for

    default_cwd = str(loaded.path.parent)
    out: list[tuple[str, str, str, Callable[[], ToolSource]]] = []
    for ref in loaded.config.sources():
        label = {
            "mcp": f'MCP server "{ref.name}" ({ref.transport})',
            "cli": f'CLI tool "{ref.name}"',
            "openapi": f'OpenAPI "{ref.name}"',
        }[ref.kind]
        out.append((ref.name, label, ref.prefix, functools.partial(source_for, ref, default_cwd)))
    return out


async def _list(name: str, label: str, prefix: str, opener: Callable[[], ToolSource]) -> Found:
    found = Found(name, label, prefix)
    source = opener()
    try:
        await asyncio.wait_for(source.start(), START_TIMEOUT + 5)
        found.tools = list(source.tools)
    except TimeoutError:
        found.error = f"did not start and list its tools within {START_TIMEOUT:g}s"
    except Exception as exc:  # noqa: BLE001 - one source failing must not hide the others
        found.error = str(exc) or type(exc).__name__
    finally:
        try:
            await source.close()
        except Exception:  # noqa: BLE001, S110 - closing what failed to start
            pass
    return found


async def discover(loaded: LoadedConfig) -> list[Found]:
    """Every source, started at once (their start-up times overlap)."""
    return list(await asyncio.gather(*(_list(*o) for o in _openers(loaded))))


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Our fd 2 into a temp file while sources start: stdio servers inherit it and chat there
    ("running on stdio"); shown only if a source fails. Yields a reader of what was captured."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lambda: (capture.seek(0), capture.read().decode(errors="replace"))[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def listing(found: list[Found], width: int) -> str:
    total = sum(len(f.tools) for f in found if f.error is None)
    lines = [f"Discovered {total} tools:"]
    for f in found:
        if f.error is not None:
            lines += ["", f"  {f.label}: FAILED: {f.error}"]
            continue
        lines += ["", f"  {f.label} ({len(f.tools)} tools):"]
        names = [f"{f.prefix}{t.get('name', '?')}" for t in f.tools]
        column = max((len(n) for n in names), default=0) + 2
        room = max(20, width - column - 4)
        for name, tool in zip(names, f.tools, strict=True):
            lines.append(f"    {name:<{column}}{one_line(tool.get('description'), room) or '-'}")
    return "\n".join(lines)


def run(loaded: LoadedConfig, generate: bool, agent: str, output: str | None) -> int:
    """The command: listing on stdout (on stderr when the policy goes to stdout)."""
    if not loaded.config.mcp_servers and not loaded.config.cli_tools and not loaded.config.openapi:
        raise UserError(
            f"{loaded.path}: no tool sources to discover (mcp_servers, cli_tools, openapi)"
        )
    with _captured_stderr() as captured:
        found = asyncio.run(discover(loaded))
        chatter = captured()
    policy_to_stdout = generate and output in (None, "-")
    out = sys.stderr if policy_to_stdout else sys.stdout
    width = shutil.get_terminal_size((100, 24)).columns
    print(listing(found, width), file=out)
    failed = [f for f in found if f.error is not None]
    if generate:
        tools = [
            Tool(f"{f.prefix}{t['name']}", t)
            for f in found
            if f.error is None
            for t in f.tools
            if isinstance(t.get("name"), str)
        ]
        text = render(
            tools,
            agent,
            missing=[f"{f.label}: {f.error}" for f in failed],
            source_note=f" from {loaded.path.name}",
        )
        if policy_to_stdout:
            sys.stdout.write(text)
        else:
            assert output is not None
            try:
                Path(output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
            print(f"\nstarter policy written to {output}", file=out)
    if failed and chatter.strip():
        print(
            "the upstreams' own output:\n  " + "\n  ".join(chatter.strip().splitlines()[-20:]),
            file=sys.stderr,
        )
    for f in failed:
        print(f"agent-mesh: discover: {f.label} failed: {f.error}", file=sys.stderr)
    return 1 if failed else 0
