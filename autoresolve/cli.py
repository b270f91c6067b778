"""`agent-mesh supervisor`: run the supervisor, show its decision history, try its rules on
recorded calls. A user's mistake is one line on stderr and exit status 2 (`--debug`: traceback)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from autoresolve.config import Loaded, load
from autoresolve.decide import by_rules, call_of
from autoresolve.memory import Memory
from autoresolve.mesh_process import MeshProcessError
from mesh_config.model import ConfigError

DEFAULT_CONFIG = "supervisor.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-mesh supervisor",
        description="resolve a mesh's pending approvals with rules and a local LLM "
        "(README: The supervisor)",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--dry-run", action="store_true", help="decide and log, resolve nothing")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command")
    history = sub.add_parser("history", help="the supervisor's recent decisions, newest first")
    history.add_argument("--config", default=argparse.SUPPRESS)
    history.add_argument("--agent")
    history.add_argument("--tool")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    rules = sub.add_parser("test-rules", help="what the rules would decide for recorded calls")
    rules.add_argument("--config", default=argparse.SUPPRESS)
    rules.add_argument(
        "--traces", required=True, help="a trace file (JSONL, the mesh's trace_file)"
    )
    rules.add_argument(
        "--all",
        action="store_true",
        help="every recorded call, not only those that needed approval",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = load(args.config)
        if args.command == "history":
            return _history(loaded, args)
        if args.command == "test-rules":
            return _test_rules(loaded, Path(args.traces), args.all)
        return _run(loaded, args.dry_run, args.debug)
    except ConfigError as exc:
        print(f"agent-mesh supervisor: {exc}", file=sys.stderr)
        return 2
    except (UserError, MeshProcessError) as exc:
        if args.debug:
            raise
        print(f"agent-mesh supervisor: {exc}", file=sys.stderr)
        return 2


class UserError(Exception):
    """Something the user can fix; shown as one line."""


# -- run ------------------------------------------------------------------------------------


def _run(loaded: Loaded, dry_run: bool, debug: bool) -> int:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s supervisor %(levelname)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return asyncio.run(_serve(loaded, dry_run))


async def _serve(loaded: Loaded, dry_run: bool) -> int:
    from autoresolve.llm import model_for
    from autoresolve.loop import Supervisor
    from autoresolve.mesh_api import MeshApi

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings, url = loaded.settings, loaded.mesh_url()
    log = logging.getLogger("autoresolve")
    api = MeshApi(url, operator_token=loaded.operator_token, agent=settings.agent)
    async with httpx.AsyncClient() as http, contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(api.aclose)
        process = None
        if settings.mesh_process.enabled:
            from agent_mesh.proctree import become_subreaper
            from autoresolve.mesh_process import MeshProcess

            process = MeshProcess(loaded, api)  # a bad mesh config: one line, before anything runs
            become_subreaper()  # orphans of a kill -9 of the mesh are ours to stop
            cleanup.push_async_callback(process.close)
        memory = Memory(loaded.memory_path)
        cleanup.callback(memory.close)
        model = model_for(settings.model, http) if settings.model else None
        log.info(
            "supervising %s: %d rules, model %s, memory %s%s",
            url,
            len(settings.rules),
            f"{settings.model.provider}:{settings.model.model}" if settings.model else "none",
            loaded.memory_path,
            " (dry run: nothing is resolved)" if dry_run else "",
        )
        supervisor = Supervisor(loaded, api, memory, model, dry_run)
        tasks = []
        if process is not None:
            process.up = (
                supervisor.wake
            )  # a restarted mesh is polled at once, not after the backoff
            await process.ensure(stop)  # attached, or started and answering /health
            tasks.append(asyncio.create_task(process.watch(stop)))
        tasks.append(asyncio.create_task(supervisor.run(stop)))
        await asyncio.gather(*tasks)
    return 0


# -- history --------------------------------------------------------------------------------


def _history(loaded: Loaded, args: argparse.Namespace) -> int:
    if not loaded.memory_path.exists():
        raise UserError(f"no decisions yet ({loaded.memory_path} does not exist)")
    memory = Memory(loaded.memory_path)
    try:
        rows = memory.history(args.agent, args.tool, args.limit)
    finally:
        memory.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    table = Table(title=f"decisions ({loaded.memory_path})", title_justify="left")
    for column in (
        "when",
        "approval",
        "agent",
        "tool",
        "decision",
        "by",
        "conf",
        "outcome",
        "reasoning",
    ):
        table.add_column(column.upper())
    for row in rows:
        table.add_row(
            time.strftime("%m-%d %H:%M:%S", time.localtime(row["at"])),
            row["approval_id"][:8],
            row["agent"],
            row["tool"],
            row["action"],
            row["by"],
            f"{row['confidence']:.2f}",
            row["outcome"],
            _short(row["reasoning"], 60),
        )
    _console().print(table)
    return 0


# -- test-rules -----------------------------------------------------------------------------


def _test_rules(loaded: Loaded, traces: Path, every_call: bool) -> int:
    records = list(_read_traces(traces))
    if not every_call:
        records = [(n, r) for n, r in records if r.get("policy") == "human_approval"]
    table = Table(
        title=f"{traces}: what the rules of {loaded.path.name} decide", title_justify="left"
    )
    for column in ("line", "agent", "tool", "params", "decision", "rule", "conf"):
        table.add_column(column.upper())
    counts = {"approve": 0, "deny": 0, "escalate": 0}
    for number, record in records:
        decision = by_rules(loaded.settings.rules, call_of(record))
        action = decision.action if decision else "escalate"
        counts[action] += 1
        style = {"approve": "green", "deny": "red", "escalate": "yellow"}[action]
        table.add_row(
            str(number),
            str(record.get("agent_id", "")),
            str(record.get("tool", "")),
            _short(json.dumps(record.get("params", {})), 50),
            f"[{style}]{action}[/{style}]",
            decision.by.removeprefix("rule:") if decision else "(no rule: model or human)",
            f"{decision.confidence:.2f}" if decision else "",
        )
    console = _console()
    console.print(table)
    which = "calls" if every_call else "calls that needed approval"
    console.print(
        f"{len(records)} {which}: {counts['approve']} approve, {counts['deny']} deny, "
        f"{counts['escalate']} escalate"
    )
    return 0


def _read_traces(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"--traces {path}: {exc.strerror or exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UserError(f"--traces {path}: line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict) or "tool" not in record:
            raise UserError(f"--traces {path}: line {number}: not a trace record (no 'tool')")
        out.append((number, record))
    return out


def _console() -> Console:
    # Piped or redirected: wide rows rather than cells cut to an assumed 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
