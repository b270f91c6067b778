"""Issue 12 goals 4 and 5 for `scripts/bench.py`: many agents at once, and the idle tree's memory.

- Many `/mcp` agents: SESSIONS sessions opened (initialized), each by its own agent id
  (`Authorization: Bearer agent:scale-<i>`), and kept open (their connections closed once
  initialized, as an agent between calls does: a session lives on without one) while CALLERS of
  them call `tools/call` echo concurrently. The gateway's RSS before (after a warm-up of a few
  sessions and calls) and with every session open gives the growth per open session.
- Many REST agents: REST_AGENTS callers, each its own agent id and keep-alive connection,
  `POST /tool/everything.echo` concurrently.
- Memory: RSS, PSS and USS (from /proc/<pid>/smaps_rollup) of each process of an idle tree,
  the upstream server itself not counted. The goal's tree is supervisord, broker, gateway,
  policy, approval, tracer and one upstream worker: the warm spare upstream worker and
  supervisord's wakeup ticker are measured and shown too, on lines of their own, not summed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import resource
from dataclasses import dataclass, field
from pathlib import Path

import bench_http as bh
from bench_conn import HttpConn, McpConn
from bench_http import Result

from agent_mesh.launcher import TICKER
from agent_mesh.proctree import cmdline

SESSIONS, CALLERS, REST_AGENTS = 1000, 200, 500
WARM_SESSIONS = 20  # opened (and called) before the baseline: first-use costs are not per session
OPEN_AT_ONCE = 50  # sessions initialized concurrently while opening them all
SESSION_KB_GOAL, TREE_MB_GOAL = 20.0, 250.0
MESH_ROLES = {"supervisord", "broker", "gateway", "policy", "approval", "tracer", "lifecycle"}


@dataclass
class ProcMemory:
    role: str
    pid: int
    rss_kb: int
    pss_kb: int
    uss_kb: int
    counted: bool = True  # in the goal's tree (not the warm spare, not the ticker)


@dataclass
class Scale:
    sessions: int = 0  # /mcp sessions open during the calls
    session_errors: int = 0  # sessions that failed to open
    first_session_error: str | None = None
    gateway_rss_before_kb: int = 0
    gateway_rss_open_kb: int = 0  # with every session open, before the calls
    gateway_rss_after_kb: int = 0  # after the calls, sessions still open
    mcp: Result | None = None  # CALLERS of the open sessions calling
    rest: Result | None = None  # REST_AGENTS agents calling
    idle_memory: list[ProcMemory] = field(default_factory=list)

    @property
    def kb_per_session(self) -> float:
        opened = self.sessions - WARM_SESSIONS
        grown = self.gateway_rss_open_kb - self.gateway_rss_before_kb
        return grown / opened if opened > 0 else float("nan")


def raise_fd_limit() -> None:
    """Soft → hard: this process holds a connection per caller (the gateway does the same)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def smaps(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) in KiB: USS is the private pages, what ending the process would free."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields.get("Rss", 0), fields.get("Pss", 0), uss


def tree_memory(tree: set[int], home: Path) -> list[ProcMemory]:
    """Each process of the mesh tree but the upstream servers (children of upstream workers).
    `home`: the mesh's $AGENT_MESH_HOME, where a warm spare says it is one
    (workers/upstream_slots.py)."""
    spares = {int(f.name.rsplit(".", 1)[1]) for f in home.glob("*/slots/*.spare.*")}
    out = []
    for pid in tree:
        command = cmdline(pid)
        role = bh.role_of(command)
        if pid in spares:
            out.append(ProcMemory(f"{role} (warm spare)", pid, *smaps(pid), counted=False))
        elif TICKER in command:
            out.append(ProcMemory("wakeup ticker", pid, *smaps(pid), counted=False))
        elif role in MESH_ROLES or role.startswith("upstream:"):  # not node, the server itself
            out.append(ProcMemory(role, pid, *smaps(pid)))
    return sorted(out, key=lambda m: (not m.counted, m.role))


def counted(memory: list[ProcMemory]) -> list[ProcMemory]:
    return [m for m in memory if m.counted]


def gateway_pids(tree: set[int]) -> list[int]:
    return [pid for pid in tree if bh.role_of(cmdline(pid)) == "gateway"]


def rss_kb(pids: list[int]) -> int:
    return sum(smaps(pid)[0] for pid in pids)


async def settle(pids: list[int]) -> int:
    """The gateways' RSS once it stops moving (a few reads 0.3 s apart agree within 64 KiB)."""
    last = rss_kb(pids)
    for _ in range(10):
        await asyncio.sleep(0.3)
        now = rss_kb(pids)
        if abs(now - last) < 64:
            return now
        last = now
    return last


async def many_mcp(
    port: int, tree: set[int], duration: float, counter: itertools.count[int], rep: Scale
) -> None:
    gateways = gateway_pids(tree)
    conns = [McpConn(port, agent=f"scale-{i}") for i in range(SESSIONS)]
    warm = conns[:WARM_SESSIONS]
    await asyncio.gather(*(c.open() for c in warm))
    await bh.drive([c.call for c in warm], bh.WARMUP, counter)
    for c in warm:
        c.close()
    gc.collect()
    rep.gateway_rss_before_kb = await settle(gateways)
    problems: list[str] = []

    async def open_one(conn: McpConn) -> None:
        try:
            problem = await conn.open()
        except Exception as exc:  # noqa: BLE001 - counted, the first reported
            problem = f"{type(exc).__name__}: {exc}"
        conn.close()  # the session stays open without its connection
        if problem is not None:
            problems.append(problem)

    rest = conns[WARM_SESSIONS:]
    for i in range(0, len(rest), OPEN_AT_ONCE):
        await asyncio.gather(*(open_one(c) for c in rest[i : i + OPEN_AT_ONCE]))
    rep.sessions = sum(1 for c in conns if c.session)
    rep.session_errors, rep.first_session_error = len(problems), next(iter(problems), None)
    rep.gateway_rss_open_kb = await settle(gateways)
    callers = [c for c in conns if c.session][-CALLERS:]  # sessions opened last, and warm ones
    try:
        rep.mcp = await bh.measure("mesh-mcp-many", [c.call for c in callers], duration, counter)
    finally:
        for c in callers:
            c.close()
    rep.gateway_rss_after_kb = await settle(gateways)


async def many_rest(port: int, duration: float, counter: itertools.count[int], rep: Scale) -> None:
    conns = [HttpConn(port, agent=f"rest-{i}") for i in range(REST_AGENTS)]
    try:
        rep.rest = await bh.measure("mesh-rest-many", [c.call for c in conns], duration, counter)
    finally:
        for c in conns:
            c.close()
