"""Benchmark: MCP `echo` calls direct to server-everything vs. through a real mesh's REST API.

    python scripts/bench_http.py [--duration 5] [--policy-workers N] [--upstream-workers N] [--json] [--keep]

1. direct: one in-process `UpstreamClient` (stdio) to node_modules/.bin/mcp-server-everything;
2. mesh-rest: `agent-mesh serve` (supervisord, temp AGENT_MESH_HOME, free port) with that server as
   upstream `everything`, driven with `POST /tool/everything.echo` over raw HTTP/1.1 keep-alive
   (one connection per concurrent worker; every call has distinct params, so loop detection stays quiet).
Each concurrency level is warmed up for 0.5 s, then measured for --duration seconds. --keep leaves the
temp dir (mesh logs in <home>/<hash>/logs/) in place and prints its path. Needs `npm ci` first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from workers.mcp_client import UpstreamClient, UpstreamSpec  # noqa: E402

EVERYTHING = REPO / "node_modules" / ".bin" / "mcp-server-everything"
CONCURRENCY = (1, 16, 64)
WARMUP = 0.5
AGENT = "bench"

Call = Callable[[int], Awaitable[str | None]]  # n -> None on success, else an error description


@dataclass
class Result:
    mode: str
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str | None = None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def drive(calls: list[Call], duration: float, counter: itertools.count[int]) -> tuple[list[float], int, str | None, float]:
    """Each call loops until `duration` is up; returns (ok latencies s, errors, first error, elapsed s)."""
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    start = time.perf_counter()
    deadline = start + duration
    end = start

    async def worker(call: Call) -> None:
        nonlocal errors, first_error, end
        while (t0 := time.perf_counter()) < deadline:
            try:
                err = await call(next(counter))
            except Exception as exc:  # noqa: BLE001 - counted, first one reported
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            end = max(end, t1)
            if err is None:
                latencies.append(t1 - t0)
            else:
                errors += 1
                first_error = first_error or err

    await asyncio.gather(*(worker(c) for c in calls))
    return latencies, errors, first_error, end - start


async def measure(mode: str, calls: list[Call], duration: float, counter: itertools.count[int]) -> Result:
    await drive(calls, WARMUP, counter)
    lat, errors, first_error, elapsed = await drive(calls, duration, counter)
    lat.sort()
    return Result(mode, len(calls), len(lat) / elapsed, percentile(lat, 0.50) * 1e3,
                  percentile(lat, 0.99) * 1e3, errors, first_error)


# -- direct ----------------------------------------------------------------------------------------

async def bench_direct(duration: float, counter: itertools.count[int]) -> list[Result]:
    spec = UpstreamSpec(name="everything", transport="stdio", command=str(EVERYTHING), args=("stdio",))
    async with UpstreamClient(spec) as client:
        async def call(n: int) -> str | None:
            result = await client.call_tool("echo", {"message": f"hi {n}"}, timeout=30)
            return "isError: " + json.dumps(result)[:500] if result.get("isError") else None

        return [await measure("direct", [call] * c, duration, counter) for c in CONCURRENCY]


# -- mesh over REST --------------------------------------------------------------------------------

class HttpConn:
    """One persistent HTTP/1.1 connection posting to /tool/everything.echo."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = (f"POST /tool/everything.echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Authorization: Bearer agent:{AGENT}\r\nContent-Type: application/json\r\n")

    async def call(self, n: int) -> str | None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        body = b'{"params": {"message": "hi %d"}}' % n
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        if "content-length" not in headers:
            await self.close()
            raise RuntimeError(f"HTTP {status} without Content-Length: {headers}")
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return None if status == 200 else f"HTTP {status}: {data.decode(errors='replace')[:500]}"

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def bench_mesh(port: int, duration: float, counter: itertools.count[int]) -> list[Result]:
    results = []
    for c in CONCURRENCY:
        conns = [HttpConn(port) for _ in range(c)]
        try:
            results.append(await measure("mesh-rest", [conn.call for conn in conns], duration, counter))
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.add(child)
            stack.append(child)
    return out


def rss_mb(pids: set[int]) -> float:
    kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


class MeshProcess:
    """`python -m agent_mesh serve` (which execs supervisord) on a temp config and AGENT_MESH_HOME."""

    def __init__(self, tmp: Path, policy_workers: int, upstream_workers: int) -> None:
        self.port = free_port()
        self.home = tmp / "home"
        self.config_path = tmp / "mesh.yaml"
        self.config_path.write_text(yaml.safe_dump({
            "port": self.port,
            "policy_workers": policy_workers,
            "mcp_servers": [{"name": "everything", "transport": "stdio", "command": str(EVERYTHING),
                             "args": ["stdio"], "workers": upstream_workers}],
            "policies": [{"name": AGENT, "agent": AGENT, "rules": [{"tools": ["everything.*"], "action": "allow"}]}],
        }))
        self.output = tmp / "serve.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent_mesh", "serve", "--config", str(self.config_path)],
                env={**os.environ, "AGENT_MESH_HOME": str(self.home)}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent-mesh serve exited {self.proc.returncode}: {self.output.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mesh not healthy after {timeout}s; see {self.home}")

    def tree(self) -> set[int]:
        return set() if self.proc is None else {self.proc.pid} | descendants(self.proc.pid)

    def stop(self, grace: float = 5.0) -> dict[int, str]:
        """SIGTERM supervisord and wait; give orphans `grace` s, then SIGKILL them.

        Returns {pid: "cmdline (what happened)"} of processes that outlived supervisord."""
        if self.proc is None:
            return {}
        tree = self.tree() - {self.proc.pid}
        names = {pid: cmdline(pid) for pid in tree}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        t0 = time.monotonic()
        outlived = {pid for pid in tree if alive(pid)}
        report = {}
        while (live := {pid for pid in outlived if alive(pid)}) and time.monotonic() - t0 < grace:
            time.sleep(0.02)
        for pid in outlived:
            if pid in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                report[pid] = f"{names[pid]} (still alive {grace:.0f}s after supervisord exited: SIGKILLed)"
            else:
                report[pid] = f"{names[pid]} (exited on its own; all gone {time.monotonic() - t0:.2f}s after supervisord)"
        return report


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


# -- report ----------------------------------------------------------------------------------------

def table(direct: list[Result], mesh: list[Result]) -> str:
    base = {r.concurrency: r for r in direct}
    rows = [f"{'mode':<10} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"{'x direct':>8} {'+p50 ms':>8}"]
    for r in direct + mesh:
        d = base.get(r.concurrency)
        extra = (f"{r.calls_per_s / d.calls_per_s:>8.2f} {r.p50_ms - d.p50_ms:>8.2f}"
                 if r.mode != "direct" and d else f"{'':>8} {'':>8}")
        rows.append(f"{r.mode:<10} {r.concurrency:>4} {r.calls_per_s:>9.1f} {r.p50_ms:>8.2f} "
                    f"{r.p99_ms:>8.2f} {r.errors:>6} {extra}")
    errors = [f"first error ({r.mode}, c={r.concurrency}): {r.first_error}" for r in direct + mesh if r.first_error]
    return "\n".join(rows + errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured per concurrency level")
    ap.add_argument("--policy-workers", type=int, default=1)
    ap.add_argument("--upstream-workers", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (mesh logs) and print its path")
    args = ap.parse_args()
    if not EVERYTHING.exists():
        sys.exit(f"{EVERYTHING} missing: run `npm ci` in {REPO}")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    counter = itertools.count()
    t_start = time.monotonic()
    print(f"direct baseline: {len(CONCURRENCY)} x ({WARMUP} + {args.duration}) s ...", file=sys.stderr)
    direct = asyncio.run(bench_direct(args.duration, counter))

    tmp = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    mesh = MeshProcess(tmp, args.policy_workers, args.upstream_workers)
    try:
        print(f"starting mesh on port {mesh.port} (home {mesh.home}) ...", file=sys.stderr)
        mesh.start()
        results = asyncio.run(bench_mesh(mesh.port, args.duration, counter))
        tree = mesh.tree()
        rss = rss_mb(tree)
    finally:
        for pid, what in mesh.stop().items():
            print(f"warning: pid {pid} outlived supervisord: {what}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp} (mesh logs under {mesh.home}/*/logs/)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\npolicy_workers={args.policy_workers} upstream_workers={args.upstream_workers} "
          f"duration={args.duration}s per level, warmup {WARMUP}s")
    print(table(direct, results))
    print(f"mesh process tree RSS: {rss:.1f} MB over {len(tree)} processes (supervisord + descendants)")
    print(f"total wall time: {time.monotonic() - t_start:.1f} s")
    if args.json:
        print(json.dumps({"policy_workers": args.policy_workers, "upstream_workers": args.upstream_workers,
                          "duration_s": args.duration, "results": [asdict(r) for r in direct + results],
                          "mesh_rss_mb": round(rss, 1), "mesh_processes": len(tree)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
