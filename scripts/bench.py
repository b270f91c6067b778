"""agent-mesh benchmarks in one command: prints the tables, then writes docs/benchmarks.md.

    python scripts/bench.py [--duration 5] [--quick] [--no-write] [--json] [--keep]
                            [--parts echo,scaling,agents,peers] [--go-bin PATH]
                            [--fastmcp-python PATH] [--mcpo PATH]

1. `echo` of server-everything at concurrency 1, 16, 64 (0.5 s warm-up, then --duration s each;
   all calls have distinct params, as a real agent's would: a policy with `rate_limit` refuses
   the 4th identical call within 10 s).
   direct: in-process `UpstreamClient` (as bench_http.py); direct-sdk: the official SDK `Client`
   on the upstream over stdio, the baseline of the MCP front-ends; mesh-rest: `POST
   /tool/everything.echo`, raw HTTP/1.1 keep-alive, one connection per concurrent caller;
   mesh-mcp: `tools/call` on `/mcp` over raw HTTP/1.1, one MCP session and connection per
   concurrent caller, run right after mesh-rest at each level (issue 12: /mcp vs REST);
   mesh-mcp-http: SDK `Client` over Streamable HTTP to `/mcp`; mesh-stdio: SDK `Client` on
   `agent-mesh --mcp --config <same config>` (attaches to the running mesh). The SDK modes use ONE
   session per level, all its calls concurrent on it. Then the RSS of the mesh tree.
2. Scaling: CPU-bound upstream (bench_upstream.py `burn`, ~5-10 ms of SHA-256) with `workers: 1`,
   then `workers: 2`; REST at concurrency 16; per-worker `served` from /mcp-servers.
3. Head-of-line: echo (REST, concurrency 1) with the mesh's other upstream idle, then busy with 8
   concurrent 2 s `sleep` calls.
4. Many agents (issue 12; scripts/bench_scale.py): on a mesh whose policy allows every agent,
   first the RSS, PSS and USS of each process of the idle tree; then 1,000 `/mcp` sessions, each
   its own agent id, open while 200 of them call echo (the gateway's RSS growth per session), then
   500 REST agents calling at once.
5. Peers (scripts/bench_peers.py), each optional and skipped with a note when not given or not
   installed: the Go agent-mesh (REST), fastmcp's proxy (/mcp), mcpo (REST), at c=1, 16, 64.
Each mesh: `agent-mesh serve` (supervisord), temp dir and AGENT_MESH_HOME, free port; stopped by
SIGTERM (leftovers SIGKILLed), also on errors and Ctrl-C. Needs `npm ci`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench_http as bh
import bench_peers
import bench_scale as bs
import yaml
from bench_conn import AGENT, HttpConn, McpConn
from bench_http import Result, echo_params, rest_levels, say, sdk_levels
from bench_mesh import EVERYTHING, MeshProcess
from bench_report import (
    SCALE_CONCURRENCY,
    SLOW_CONCURRENCY,
    SLOW_SECONDS,
    Report,
    machine_info,
    render,
)
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from agent_mesh.proctree import cmdline, descendants, rss_mb
from gateway.mcp_sdk import create_mcp_http_client

UPSTREAM = bh.REPO / "scripts" / "bench_upstream.py"
DOC = bh.REPO / "docs" / "benchmarks.md"
KEPT = "<!-- measured separately: what follows is kept when this script rewrites the file -->"
CATALOG_REFRESH = 1.0  # s: /mcp-servers is the gateway's snapshot of the broker, this old at most
RUN_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL|WARN|not expected|SIGKILL")  # while running
STOP_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL|not expected|SIGKILL")  # at shutdown
ECHO_OK = 'Echo: hi {n}"'  # in the JSON reply to REST call n


def server(name: str, command: str, args: list[str], workers: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "stdio",
        "command": command,
        "args": args,
        "workers": workers,
    }


EVERYTHING_SERVER = server("everything", str(EVERYTHING), ["stdio"])


# -- meshes ----------------------------------------------------------------------------------------

LIVE: list[MeshProcess] = []  # started, not yet stopped (main stops them on the way out)


class BenchMesh(MeshProcess):
    """bench_http's MeshProcess (start / tree / stop) with our own upstream servers."""

    def __init__(self, tmp: Path, servers: list[dict[str, Any]], agent: str = AGENT) -> None:
        super().__init__(tmp, policy_workers=1, upstream_workers=1)
        rules = [{"tools": ["*"], "action": "allow"}]
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "port": self.port,
                    "policy_workers": 1,
                    "mcp_servers": servers,
                    "policies": [{"name": "bench", "agent": agent, "rules": rules}],
                }
            )
        )
        self.env = {**os.environ, "AGENT_MESH_HOME": str(self.home)}

    def workers(self, name: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/mcp-servers", timeout=5) as r:
            return next(s["workers"] for s in json.load(r) if s["name"] == name)

    def log_lines(self, pattern: re.Pattern[str]) -> set[tuple[str, str]]:
        return {
            (log.name, line.strip())
            for log in self.home.glob("*/logs/*.log")
            for line in log.read_text(errors="replace").splitlines()
            if pattern.search(line)
        }


@contextlib.contextmanager
def running_mesh(
    label: str, servers: list[dict[str, Any]], report: Report, keep: bool, agent: str = AGENT
) -> Iterator[BenchMesh]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    mesh = BenchMesh(tmp, servers, agent)
    LIVE.append(mesh)
    say(f"[{label}] starting a mesh on port {mesh.port}, AGENT_MESH_HOME={mesh.home}")
    try:
        mesh.start()
        deadline = time.monotonic() + 30  # /ready may say ok before every upstream slot is up
        while any(len(mesh.workers(s["name"])) < s["workers"] for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"[{label}] not all upstream workers up after 30 s")
            time.sleep(0.2)
        say(f"[{label}] up")
        yield mesh
    finally:
        during = mesh.log_lines(RUN_PROBLEM)
        say(f"[{label}] stopping the mesh")
        notes = mesh.stop() + [f"{name}: {line[:300]}" for name, line in sorted(during)]
        notes += [
            f"at shutdown, {name}: {line[:300]}"
            for name, line in sorted(mesh.log_lines(STOP_PROBLEM) - during)
        ]
        LIVE.remove(mesh)
        say(f"[{label}] stopped")
        report.notes += [f"[{label}] {line}" for line in notes[:20]]
        report.notes += [f"[{label}] ... and {len(notes) - 20} more"] if len(notes) > 20 else []
        if keep:
            say(f"[{label}] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the three parts -------------------------------------------------------------------------------


async def part_echo(args: argparse.Namespace, counter: itertools.count[int], rep: Report) -> None:
    say("direct c=1,16,64 ...")
    rep.echo += await bh.bench_direct(args.duration, counter)
    upstream = StdioServerParameters(command=str(EVERYTHING), args=["stdio"])
    async with Client(upstream, mode="legacy") as client:
        rep.echo += await sdk_levels("direct-sdk", client, "echo", args.duration, counter)
    with running_mesh("echo", [EVERYTHING_SERVER], rep, args.keep) as mesh:
        tool = "everything.echo"
        # REST and /mcp (raw HTTP, one session per caller) in turn at each level: the ratio of
        # the two (issue 12) is from the same minute.
        rest, mcp = [], []
        for c in bh.CONCURRENCY:
            rest += await rest_levels(
                "mesh-rest", mesh.port, tool, echo_params, (c,), args.duration, counter, ECHO_OK
            )
            say(f"mesh-mcp c={c} ...")
            conns = [McpConn(mesh.port) for _ in range(c)]
            try:
                await asyncio.gather(*(x.open() for x in conns))
                mcp.append(
                    await bh.measure("mesh-mcp", [x.call for x in conns], args.duration, counter)
                )
            finally:
                for conn in conns:
                    conn.close()
        rep.echo += rest + mcp
        http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{AGENT}"})
        transport = streamable_http_client(f"http://127.0.0.1:{mesh.port}/mcp", http_client=http)
        async with http, Client(transport, mode="legacy") as client:
            rep.echo += await sdk_levels("mesh-mcp-http", client, tool, args.duration, counter)
        front = StdioServerParameters(
            command=sys.executable,
            env=mesh.env,
            cwd=str(mesh.config_path.parent),
            args=[
                "-m",
                "agent_mesh",
                "--mcp",
                "--config",
                str(mesh.config_path),
                "--mcp-agent",
                AGENT,
            ],
        )
        async with Client(front, mode="legacy") as client:
            rep.echo += await sdk_levels("mesh-stdio", client, tool, args.duration, counter)
        tree = mesh.tree()
        rep.rss_mb, rep.mesh_processes = rss_mb(tree), len(tree)


async def part_hol(
    mesh: BenchMesh, duration: float, counter: itertools.count[int], rep: Report
) -> None:
    async def echo(mode: str) -> Result:
        return (
            await rest_levels(
                mode, mesh.port, "everything.echo", echo_params, (1,), duration, counter, ECHO_OK
            )
        )[0]

    rep.hol.append(await echo("other upstream idle"))
    slow = [
        HttpConn(mesh.port, "bench.sleep", lambda n: {"seconds": SLOW_SECONDS, "n": n})
        for _ in range(SLOW_CONCURRENCY)
    ]
    # Each caller starts a new sleep as soon as one ends, until 0.5 s after the echo run's end.
    load_s = 1.5 + bh.WARMUP + duration
    load = asyncio.create_task(bh.drive([c.call for c in slow], load_s, counter))
    try:
        await asyncio.sleep(0.5)
        rep.hol.append(await echo(f"other upstream busy ({SLOW_CONCURRENCY} x sleep)"))
        workers = await asyncio.to_thread(mesh.workers, "bench")  # <= 1 s old: the busy run
        rep.slow_inflight = sum(w["inflight"] or 0 for w in workers)
        run = await load  # the last sleeps end within SLOW_SECONDS of its deadline
        rep.slow_done, rep.slow_errors = len(run.latencies), run.errors
        rep.notes += [f"first `bench.sleep` error: {run.first_error}"] if run.first_error else []
    finally:
        load.cancel()
        for conn in slow:
            conn.close()


async def part_scaling(
    args: argparse.Namespace, counter: itertools.count[int], rep: Report
) -> None:
    for workers in (1, 2):
        label = f"workers={workers}"
        bench = server("bench", sys.executable, [str(UPSTREAM)], workers)
        with running_mesh(label, [EVERYTHING_SERVER, bench], rep, args.keep) as mesh:
            rep.scaling += await rest_levels(
                label,
                mesh.port,
                "bench.burn",
                lambda n: {"n": n},
                (SCALE_CONCURRENCY,),
                args.duration,
                counter,
            )
            await asyncio.sleep(CATALOG_REFRESH + 0.2)
            rep.served[label] = {str(w["slot"]): w["served"] for w in mesh.workers("bench")}
            if workers == 1:
                await part_hol(mesh, args.duration, counter, rep)


def reap_own_children() -> None:
    """Safety net (nothing is left, normally): SIGKILL what this process started and is alive."""
    for pid in descendants(os.getpid()):
        say(f"leftover child {pid} ({cmdline(pid)}): SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def part_agents(args: argparse.Namespace, counter: itertools.count[int], rep: Report) -> None:
    """Issue 12 goals 5 (the idle tree's memory, measured first) and 4 (many agents at once)."""
    with running_mesh("agents", [EVERYTHING_SERVER], rep, args.keep, agent="*") as mesh:
        await asyncio.sleep(2.0)  # idle: the start's allocations settled
        rep.scale.idle_memory = bs.tree_memory(mesh.tree(), mesh.home)
        say(f"{bs.SESSIONS} /mcp sessions, {bs.CALLERS} of them calling ...")
        await bs.many_mcp(mesh.port, mesh.tree(), args.duration, counter, rep.scale)
        say(f"{bs.REST_AGENTS} REST agents ...")
        await bs.many_rest(mesh.port, args.duration, counter, rep.scale)


async def part_peers(args: argparse.Namespace, counter: itertools.count[int], rep: Report) -> None:
    """Issue 12's peers on the same upstream and load (scripts/bench_peers.py), each optional."""
    say("peers ...")
    results, notes = await bench_peers.run_peers(
        args.go_bin, args.fastmcp_python, args.mcpo, args.duration, counter
    )
    rep.echo += results
    rep.notes += notes


PARTS = {"echo": part_echo, "scaling": part_scaling, "agents": part_agents, "peers": part_peers}


async def run_all(args: argparse.Namespace, report: Report) -> None:
    counter = itertools.count()
    for part in args.parts:
        await PARTS[part](args, counter, report)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    ap.add_argument("--quick", action="store_true", help="1 s per level (smoke run)")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {DOC}")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (mesh logs)")
    ap.add_argument("--go-bin", metavar="PATH", help="the Go agent-mesh binary (mode go-rest)")
    ap.add_argument("--fastmcp-python", metavar="PATH", help="a Python with fastmcp installed")
    ap.add_argument("--mcpo", metavar="PATH", help="mcpo's command (default: mcpo on PATH)")
    ap.add_argument(
        "--parts",
        type=lambda s: s.split(","),
        default=list(PARTS),
        help=f"comma-separated, of {','.join(PARTS)} (default: all)",
    )
    args = ap.parse_args()
    args.duration = 1.0 if args.quick else args.duration
    if not EVERYTHING.exists():
        sys.exit(f"{EVERYTHING} missing: run `npm ci` in {bh.REPO}")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # same cleanup path as Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    bs.raise_fd_limit()
    machine, report = machine_info(), Report()
    try:
        asyncio.run(run_all(args, report))
    finally:
        for mesh in LIVE:
            mesh.stop()
        reap_own_children()
    machine["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cmd = " ".join(["python", "scripts/bench.py", *sys.argv[1:]])
    head = "\n".join(
        [
            (
                f"Generated by `{cmd}` (method: the docstring of `scripts/bench.py`; where the "
                "time "
                "goes: `docs/profiling.md`)."
            ),
            "",
            *(f"- {k}: {v}" for k, v in machine.items()),
        ]
    )
    text = render(report, args.duration)
    print(f"\n{head}\n\n{text}\n\ntotal wall time: {time.monotonic() - bh.T0:.1f} s")
    if not args.no_write:
        DOC.parent.mkdir(exist_ok=True)
        kept = DOC.read_text().partition(KEPT)[2] if DOC.exists() else ""
        DOC.write_text(f"# Benchmarks\n\n{head}\n\n{text}\n" + (f"\n{KEPT}{kept}" if kept else ""))
        say(f"wrote {DOC}")
    if args.json:
        print(json.dumps(asdict(report) | machine | {"duration_s": args.duration}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)  # the meshes were already stopped by main's `finally`
