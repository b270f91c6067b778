"""Benchmark: MCP `echo` calls direct to server-everything vs. through a real mesh's REST API.

    python scripts/bench_http.py [--duration 5] [--policy-workers N] [--upstream-workers N]
                                 [--cpu] [--mcp] [--no-direct] [--json] [--keep]
                                 [--config-extra YAML] [--concurrency C ...]

1. direct: one in-process `UpstreamClient` (stdio) on node_modules/.bin/mcp-server-everything;
2. mesh-rest: `agent-mesh serve` (supervisord; temp dir, free port, temp AGENT_MESH_HOME) with that
   server as upstream `everything`, driven with `POST /tool/everything.echo` over raw HTTP/1.1
   keep-alive, one connection per concurrent worker. Every call has distinct params (a counter),
   so the numbers hold for a policy with `rate_limit` too (loop detection: 4th identical in 10 s).
Each concurrency level (1, 16, 64; the mesh's: --concurrency) is warmed up for 0.5 s, then
measured for --duration seconds.
--cpu also prints, per mesh level, the CPU time each process of the tree spent per call (from
/proc, measured part only): where a call's cost goes, process by process (docs/profiling.md).
--mcp also runs `tools/call` through `/mcp` (MCP Streamable HTTP, raw HTTP/1.1, one session per
concurrent worker) right after each REST level, and prints /mcp vs REST per level.
--keep leaves the temp dir (mesh logs in <home>/<hash>/logs/) and prints its path. Needs `npm ci`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from bench_conn import HttpConn, McpConn, Params
from bench_mesh import EVERYTHING, MeshProcess

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from mcp import Client

from agent_mesh.proctree import cmdline, cpu_seconds, rss_mb
from workers.mcp_client import UpstreamClient
from workers.upstream_types import UpstreamSpec

CONCURRENCY = (1, 16, 64)
WARMUP = 0.5

Call = Callable[[int], Awaitable[str | None]]  # call number -> None if ok, else what went wrong


@dataclass
class Result:
    mode: str
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str | None = None
    cpu_ms_per_call: dict[str, float] | None = None  # --cpu: by process role


@dataclass
class Run:
    latencies: list[float]  # seconds, successful calls only
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(calls: list[Call], duration: float, counter: itertools.count[int]) -> Run:
    """One task per call, each looping until `duration` is up (in-flight calls finish)."""
    run = Run([])
    start = time.perf_counter()
    deadline = start + duration

    async def worker(call: Call) -> None:
        while (t0 := time.perf_counter()) < deadline:
            try:
                err = await call(next(counter))
            except Exception as exc:  # noqa: BLE001 - counted; the first one is reported
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            run.elapsed = max(run.elapsed, t1 - start)
            if err is None:
                run.latencies.append(t1 - t0)
            else:
                run.errors += 1
                run.first_error = run.first_error or err

    await asyncio.gather(*(worker(c) for c in calls))
    return run


async def measure(
    mode: str,
    calls: list[Call],
    duration: float,
    counter: itertools.count[int],
    tree: set[int] | None = None,
) -> Result:
    """`tree`: also measure these processes' CPU time per call."""
    await drive(calls, WARMUP, counter)
    before = {pid: cpu_seconds(pid) for pid in tree or ()}
    run = await drive(calls, duration, counter)
    lat = sorted(run.latencies)
    result = Result(
        mode,
        len(calls),
        len(lat) / run.elapsed,
        percentile(lat, 0.50) * 1e3,
        percentile(lat, 0.99) * 1e3,
        run.errors,
        run.first_error,
    )
    if tree and lat:
        spent: dict[str, float] = {}
        for pid, start in before.items():
            role = role_of(cmdline(pid))
            spent[role] = spent.get(role, 0.0) + (cpu_seconds(pid) - start) * 1e3 / len(lat)
        result.cpu_ms_per_call = dict(sorted(spent.items(), key=lambda kv: -kv[1]))
    return result


def role_of(command: str) -> str:
    """A process of the mesh tree by what it does: `gateway`, `upstream:everything`, `node`..."""
    words = command.split()
    if "run" in words and words.index("run") + 1 < len(words):
        role = words[words.index("run") + 1]
        return f"{role}:{words[words.index('--server') + 1]}" if "--server" in words else role
    return (
        "supervisord"
        if "supervisord" in command
        else (os.path.basename(words[0]) if words else "?")
    )


async def bench_direct(duration: float, counter: itertools.count[int]) -> list[Result]:
    spec = UpstreamSpec(
        name="everything", transport="stdio", command=str(EVERYTHING), args=("stdio",)
    )
    async with UpstreamClient(spec) as client:

        async def call(n: int) -> str | None:
            result = await client.call_tool("echo", {"message": f"hi {n}"}, timeout=30)
            return f"isError: {json.dumps(result)[:500]}" if result.get("isError") else None

        return [await measure("direct", [call] * c, duration, counter) for c in CONCURRENCY]


async def bench_mesh(
    port: int,
    duration: float,
    counter: itertools.count[int],
    tree: set[int] | None = None,
    modes: tuple[str, ...] = ("mesh-rest",),
    levels: tuple[int, ...] = CONCURRENCY,
) -> list[Result]:
    """Each level runs every mode in turn (REST, then /mcp): their ratio is from the same minute."""
    results = []
    for c in levels:
        for mode in modes:
            conns = [(McpConn if mode == "mesh-mcp" else HttpConn)(port) for _ in range(c)]
            try:
                await asyncio.gather(*(x.open() for x in conns if isinstance(x, McpConn)))
                results.append(
                    await measure(mode, [x.call for x in conns], duration, counter, tree)
                )
            finally:
                for conn in conns:
                    conn.close()
    return results


T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr)


def echo_params(n: int) -> dict[str, Any]:
    return {"message": f"hi {n}"}


# -- load generators -------------------------------------------------------------------------------


async def rest_levels(
    mode: str,
    port: int,
    tool: str,
    params: Params,
    levels: tuple[int, ...],
    duration: float,
    counter: itertools.count[int],
    expect: str | None = None,
) -> list[Result]:
    results = []
    for c in levels:
        say(f"{mode} c={c} ...")
        conns = [HttpConn(port, tool, params, expect) for _ in range(c)]
        try:
            results.append(await measure(mode, [x.call for x in conns], duration, counter))
        finally:
            for conn in conns:
                conn.close()
    return results


async def sdk_levels(
    mode: str, client: Client, tool: str, duration: float, counter: itertools.count[int]
) -> list[Result]:
    async def call(n: int) -> str | None:  # every concurrent caller shares `client`'s session
        result = await client.call_tool(tool, echo_params(n))
        text = getattr(result.content[0], "text", None) if result.content else None
        if result.is_error or text != f"Echo: hi {n}":
            return f"call {n}: is_error={result.is_error} {str(result.content)[:500]}"
        return None

    results = []
    for c in CONCURRENCY:
        say(f"{mode} c={c} ...")
        results.append(await measure(mode, [call] * c, duration, counter))
    return results


# -- report ---------------------------------------------------------------------------------------


def table(direct: list[Result], mesh: list[Result]) -> str:
    base = {r.concurrency: r for r in direct}
    rows = [
        f"{'mode':<10} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        + f" {'x direct':>8} {'+p50 ms':>8}"
    ]
    for r in direct + mesh:
        d = base.get(r.concurrency) if r.mode != "direct" else None
        extra = f" {r.calls_per_s / d.calls_per_s:>8.2f} {r.p50_ms - d.p50_ms:>8.2f}" if d else ""
        rows.append(
            f"{r.mode:<10} {r.concurrency:>4} {r.calls_per_s:>9.1f} {r.p50_ms:>8.2f}"
            f" {r.p99_ms:>8.2f} {r.errors:>6}{extra}"
        )
    rest = {r.concurrency: r for r in mesh if r.mode == "mesh-rest"}
    for r in mesh:
        if r.mode == "mesh-mcp" and r.concurrency in rest:
            same = rest[r.concurrency]
            ratio, added = r.calls_per_s / same.calls_per_s, r.p50_ms - same.p50_ms
            rows.append(
                f"/mcp vs REST c={r.concurrency}: {ratio:.2f}x calls/s, p50 {added:+.2f} ms"
            )
    rows += [
        f"first error ({r.mode}, concurrency {r.concurrency}): {r.first_error}"
        for r in direct + mesh
        if r.first_error
    ]
    for r in mesh:
        if r.cpu_ms_per_call:
            total = sum(r.cpu_ms_per_call.values())
            rows.append(
                f"CPU ms per call, {r.mode} c={r.concurrency}: total {total:.3f} = "
                + ", ".join(
                    f"{role} {ms:.3f}" for role, ms in r.cpu_ms_per_call.items() if ms >= 0.0005
                )
            )
    return "\n".join(rows)


def settle(tree: set[int], idle: float = 0.05, timeout: float = 60.0) -> None:
    """Wait until the tree is idle (under `idle` CPU seconds per second): a process still
    starting (a gateway importing the MCP SDK in the background) is not charged to the calls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in tree)
        time.sleep(1.0)
        if sum(cpu_seconds(pid) for pid in tree) - before < idle:
            return
    print(f"note: the mesh was still busy after {timeout:g}s; measuring anyway", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    ap.add_argument("--policy-workers", type=int, default=1)
    ap.add_argument("--upstream-workers", type=int, default=1)
    ap.add_argument("--cpu", action="store_true", help="CPU time per call of each mesh process")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the mesh logs")
    ap.add_argument(
        "--mcp",
        action="store_true",
        help="also `tools/call` on /mcp (raw HTTP), after each REST level",
    )
    ap.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCY),
        metavar="C",
        help="the mesh's concurrency levels (default: %(default)s)",
    )
    ap.add_argument(
        "--config-extra",
        type=yaml.safe_load,
        default={},
        metavar="YAML",
        help="merged into the mesh config, e.g. '{otel_endpoint: \"http://127.0.0.1:9\"}'",
    )
    args = ap.parse_args()
    if not EVERYTHING.exists():
        sys.exit(f"{EVERYTHING} missing: run `npm ci` in {REPO}")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # same cleanup path as Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    counter = itertools.count()
    t_start = time.monotonic()
    load_start = os.getloadavg()
    print("direct baseline ...", file=sys.stderr)
    direct = [] if args.no_direct else asyncio.run(bench_direct(args.duration, counter))

    tmp = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    mesh = MeshProcess(tmp, args.policy_workers, args.upstream_workers, args.config_extra)
    try:
        print(f"mesh on port {mesh.port}, AGENT_MESH_HOME={mesh.home} ...", file=sys.stderr)
        mesh.start()
        settle(mesh.tree())
        results = asyncio.run(
            bench_mesh(
                mesh.port,
                args.duration,
                counter,
                mesh.tree() if args.cpu else None,
                ("mesh-rest", "mesh-mcp") if args.mcp else ("mesh-rest",),
                tuple(args.concurrency),
            )
        )
        tree = mesh.tree()
        rss = rss_mb(tree)
    finally:
        for line in mesh.stop():
            print(f"note: {line}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp} (mesh logs in {mesh.home}/*/logs/)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\npolicy_workers={args.policy_workers} upstream_workers={args.upstream_workers}"
        f" duration={args.duration}s per level (after {WARMUP}s warm-up)"
    )
    print(table(direct, results))
    print(f"mesh process tree RSS: {rss:.1f} MB ({len(tree)} processes: supervisord + descendants)")
    print(f"total wall time: {time.monotonic() - t_start:.1f} s")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*load_start))
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        print(
            json.dumps(
                {
                    "policy_workers": args.policy_workers,
                    "duration_s": args.duration,
                    "upstream_workers": args.upstream_workers,
                    "results": [asdict(r) for r in direct + results],
                    "mesh_rss_mb": round(rss, 1),
                    "mesh_processes": len(tree),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)  # the mesh was already stopped by main's `finally`
