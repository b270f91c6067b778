"""The peers of issue 12's table for `scripts/bench.py`, each optional, on the same upstream
(server-everything over stdio) and the same raw HTTP load as the mesh's modes:

- `go-rest`: the Go agent-mesh (`--go-bin PATH`; /work/shared/bench/README.md says how to build
  it), `POST /tool/everything.echo`. It listens on every interface: run the bench in a private
  network namespace (`unshare -n`, as /work/shared/bench/run_peers.sh does) on a shared host.
- `fastmcp-mcp`: fastmcp's proxy (`--fastmcp-python PATH`, a Python with fastmcp installed),
  `tools/call` on its `/mcp`, one session per caller.
- `mcpo-rest`: mcpo (`--mcpo PATH`, else `mcpo` on PATH), `POST /echo` with the arguments.

A peer not given or not installed is skipped with a note in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bench_http as bh
import yaml
from bench_conn import HttpConn, McpConn, echo
from bench_http import Result
from bench_mesh import EVERYTHING, free_port

FASTMCP_PROXY = Path("/work/shared/bench/fastmcp_proxy.py")
READY_S = 60.0
ALLOW_ALL = [{"tools": ["*"], "action": "allow"}]


class RawConn(HttpConn):
    """mcpo's REST shape: `POST /<tool>` with the arguments as the body."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(port)
        self.head = self.head.replace("POST /tool/everything.echo", f"POST {path}", 1)

    async def call(self, n: int) -> str | None:
        status, _, raw = await self.post(json.dumps(echo(n)).encode())
        return None if status == 200 else f"HTTP {status}: {raw[:300]!r}"


@contextlib.contextmanager
def started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def ready(make: Callable[[], HttpConn], proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until one call succeeds (the peer has started its upstream)."""
    deadline = time.monotonic() + READY_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}: {log.read_text()[-500:]}")
        conn = make()
        try:
            if await conn.call(0) is None:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no successful call after {READY_S:g} s")
        await asyncio.sleep(0.3)


async def levels(
    mode: str, make: Callable[[], HttpConn], duration: float, counter: itertools.count[int]
) -> list[Result]:
    out = []
    for c in bh.CONCURRENCY:
        conns = [make() for _ in range(c)]
        try:
            out.append(await bh.measure(mode, [x.call for x in conns], duration, counter))
        finally:
            for conn in conns:
                conn.close()
    return out


def commands(
    go_bin: str | None, fastmcp_python: str | None, mcpo: str | None, tmp: Path
) -> tuple[dict[str, tuple[list[str], Callable[[int], HttpConn], int]], list[str]]:
    """mode -> (command, connection maker for a port, port); and a note per peer skipped."""
    runs: dict[str, tuple[list[str], Callable[[int], HttpConn], int]] = {}
    notes = []
    if go_bin and Path(go_bin).exists():
        port = free_port()
        config = tmp / "go.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "port": port,
                    "trace_file": str(tmp / "go-traces.jsonl"),
                    "mcp_servers": [
                        {
                            "name": "everything",
                            "transport": "stdio",
                            "command": str(EVERYTHING),
                            "args": ["stdio"],
                        }
                    ],
                    "policies": [{"name": "all", "agent": "*", "rules": ALLOW_ALL}],
                }
            )
        )
        runs["go-rest"] = ([go_bin, "-config", str(config)], lambda p: HttpConn(p), port)
    else:
        notes.append(f"go-rest skipped: no Go agent-mesh binary ({go_bin or 'no --go-bin'})")
    if fastmcp_python and FASTMCP_PROXY.exists():
        port = free_port()
        command = [fastmcp_python, str(FASTMCP_PROXY), str(port), str(EVERYTHING)]
        runs["fastmcp-mcp"] = (command, lambda p: McpConn(p, tool="echo"), port)
    else:
        notes.append("fastmcp-mcp skipped: fastmcp not installed (--fastmcp-python PATH)")
    mcpo = mcpo or shutil.which("mcpo")
    if mcpo:
        port = free_port()
        command = [mcpo, "--host", "127.0.0.1", "--port", str(port), "--", str(EVERYTHING)]
        command.append("stdio")
        runs["mcpo-rest"] = (command, lambda p: RawConn(p, "/echo"), port)
    else:
        notes.append("mcpo-rest skipped: mcpo not installed (--mcpo PATH)")
    return runs, notes


async def run_peers(
    go_bin: str | None,
    fastmcp_python: str | None,
    mcpo: str | None,
    duration: float,
    counter: itertools.count[int],
) -> tuple[list[Result], list[str]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    runs, notes = commands(go_bin, fastmcp_python, mcpo, tmp)
    results: list[Result] = []
    for mode, (command, make, port) in runs.items():
        log = tmp / f"{mode}.log"
        try:
            with started(command, log) as proc:
                conn = functools.partial(make, port)
                await ready(conn, proc, log)
                results += await levels(mode, conn, duration, counter)
        except Exception as exc:  # noqa: BLE001 - one peer failing is a note, not the end
            notes.append(f"{mode} failed: {type(exc).__name__}: {str(exc)[:300]}")
    shutil.rmtree(tmp, ignore_errors=True)
    return results, notes
