"""Crash isolation under load (issue 5), what tests/e2e/test_faults*.py share: their one mesh
(the `faults_mesh` fixture: each test starts from a healthy mesh and leaves one), 24 concurrent
HTTP clients, and the checks every fault must pass:

- every request gets an answer: a success or a clear JSON error, never a hang (the clients'
  own timeout is far above the mesh's deadlines and is never hit, and the mesh's own latency
  stays within the heartbeat window);
- calls that do not depend on the killed process keep succeeding during the fault;
- supervisord has the killed process back within 2 s (new pid, registered on the bus, /health 200);
- no trace record is lost: every trace_id handed to a client is stored exactly once, in
  `GET /traces` and in the JSONL trace file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh
from tests.support import cmdline, npm_server, wait_until

CLIENTS = 24  # concurrent HTTP clients, half on each upstream
PACE = 0.1  # s between a client's calls: ~150 calls/s in all, not a saturated box
CLIENT_TIMEOUT = 30.0  # far above every deadline of the mesh (policy 5 s, upstream 2 s + 1 s)
UPSTREAM_TIMEOUT = 2.0  # timeout_seconds of both upstreams
WARMUP = 0.3  # steady load before the fault
AFTER = 1.5  # load after the killed process is back (checked: every client succeeds again)
# During a fault no answer may take longer than this: the mesh's own measure (latency_ms) is
# bounded by heartbeat liveness (1.5 s) + slack; the client's view adds its own loop's delays.
MESH_LIMIT_MS = 2000
CLIENT_LIMIT = 5.0
# How soon a killed process is back (new pid, registered / serving) under this load: the issue's
# 2 s, for every role. What makes it: supervisord's wakeup ticker (it respawns on its next poll),
# roles that import little (the upstream worker drives stdio servers without the MCP SDK; the
# gateway builds /mcp after it serves), and in-process replacement of a dead MCP server.
RESTART = 2.0
# An upstream worker or its MCP server killed: the server's warm spare (a worker process with its
# MCP server started, waiting for a slot: workers/upstream_slots.py) serves the slot within this.
TAKEOVER = 1.0  # measured 0.06-0.14 s at load 10; this is what a 2-core box at load 30 still makes

ECHO = "everything.echo"
FS = "fs.list_allowed_directories"
LONG = "everything.trigger-long-running-operation"


@dataclass
class Outcome:
    client: int
    tool: str
    agent: str
    sent: float  # time.monotonic()
    took: float
    status: int | None = None  # None: no HTTP answer (connection error)
    body: dict[str, Any] = field(default_factory=dict)
    failure: str = ""  # the exception, when there was no HTTP answer

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> str:
        return str(self.body.get("error", ""))


@dataclass
class Run:
    session: str
    outcomes: list[Outcome]
    t_fault: float = 0.0
    t_back: float = 0.0
    traces: int = 0

    def by(self, pred: Callable[[Outcome], bool]) -> list[Outcome]:
        return [o for o in self.outcomes if pred(o)]

    def during(self) -> list[Outcome]:
        """Requests that overlapped the fault window (kill → process back)."""
        return self.by(lambda o: o.sent <= self.t_back and o.sent + o.took >= self.t_fault)

    @property
    def recovery(self) -> float:
        return self.t_back - self.t_fault

    def summary(self) -> str:
        statuses = Counter(str(o.status or o.failure) for o in self.outcomes)
        mesh_ms = max((o.body.get("latency_ms", 0) for o in self.outcomes), default=0)
        return (
            f"{len(self.outcomes)} requests ({len(self.during())} during the fault), back in "
            f"{self.recovery:.2f}s, slowest answer {max(o.took for o in self.outcomes):.2f}s "
            f"(mesh {mesh_ms:.0f} ms), {dict(statuses)}, {self.traces} trace ids all stored once"
        )


def _params(tool: str, session: str, client: int, n: int) -> dict[str, Any]:
    # Distinct params on every call: each is its own trace, whatever loop detection would say.
    if tool == ECHO:
        return {"message": f"{session}/{client}/{n}"}
    return {"call": f"{session}/{client}/{n}"}


async def load_client(
    url: str, session: str, i: int, tool: str, stop: asyncio.Event, out: list[Outcome]
) -> None:
    agent = f"{session}-{i}"
    headers = {"Authorization": f"Bearer agent:{agent}", "X-Session-Id": session}
    n = 0
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, headers=headers) as http:
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            outcome = Outcome(i, tool, agent, started, 0.0)
            try:
                r = await http.post(f"/tool/{tool}", json={"params": _params(tool, session, i, n)})
            except (
                httpx.TimeoutException
            ) as exc:  # the mesh left a request hanging: always a failure
                outcome.failure = f"TIMEOUT {type(exc).__name__}"
            except httpx.TransportError as exc:  # no HTTP answer (the gateway is down)
                outcome.failure = type(exc).__name__
            else:
                outcome.status = r.status_code
                try:
                    outcome.body = r.json()
                except ValueError:
                    outcome.body = {"error": f"NOT JSON: {r.text[:200]}"}
            outcome.took = time.monotonic() - started
            out.append(outcome)
            await asyncio.sleep(PACE if outcome.status is not None else 0.05)


async def under_load(
    mesh: Mesh, session: str, fault: Callable[[], float], back: Callable[[], bool]
) -> Run:
    """Run CLIENTS clients (even ones on ECHO, odd ones on FS). Once every client has been
    answered, call `fault()` (returns the kill time), poll `back()` until it holds, keep the
    load AFTER seconds more, then stop the clients and return everything they saw."""
    stop = asyncio.Event()
    outcomes: list[Outcome] = []
    tools = (ECHO, FS)
    clients = [
        asyncio.create_task(load_client(mesh.url, session, i, tools[i % 2], stop, outcomes))
        for i in range(CLIENTS)
    ]
    run = Run(session, outcomes)
    try:
        limit = time.monotonic() + 10  # steady state first: every client answered a few times
        while (
            min(Counter(o.client for o in outcomes if o.ok).get(i, 0) for i in range(CLIENTS)) < 3
        ):
            assert time.monotonic() < limit, (
                f"{session}: no steady load: {Counter(o.status for o in outcomes)}"
            )
            await asyncio.sleep(0.05)
        await asyncio.sleep(WARMUP)
        run.t_fault = await asyncio.to_thread(fault)
        limit = run.t_fault + 30
        while not await asyncio.to_thread(back):
            assert time.monotonic() < limit, f"{session}: the killed process never came back"
            await asyncio.sleep(0.05)
        run.t_back = time.monotonic()
        await asyncio.sleep(AFTER)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), CLIENT_TIMEOUT + 5)
    return run


# -- the mesh ---------------------------------------------------------------------------------


def _wrapped_everything(tmp: Path) -> str:
    """server-everything behind `tee`, so the test can read what its worker sent it."""
    script = tmp / "everything.sh"
    script.write_text(
        f'#!/bin/sh\ntee -a "{tmp}/everything-stdin.$$.log" '
        f"| exec {npm_server('everything')} stdio\n"
    )
    script.chmod(0o755)
    return str(script)


def faults_mesh(tmp: Path, demo: Path) -> Mesh:
    """Not started: everything (behind `tee`) ×2 workers, fs ×1, two policy workers."""
    config = {
        "policy_workers": 2,
        "trace_file": "traces.jsonl",
        "mcp_servers": [
            {
                "name": "everything",
                "command": _wrapped_everything(tmp),
                "workers": 2,
                "timeout_seconds": UPSTREAM_TIMEOUT,
            },
            {
                "name": "fs",
                "command": npm_server("filesystem"),
                "args": [str(demo)],
                "timeout_seconds": UPSTREAM_TIMEOUT,
            },
        ],
        "policies": [{"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    return Mesh(tmp, config)


@pytest.fixture(autouse=True)
def healthy_before(mesh: Mesh) -> None:
    wait_until(lambda: ready_state(mesh)[0] == 200, 20, "a healthy mesh before the fault")
    for server in ("everything", "fs"):
        wait_until(lambda s=server: mesh.spare_warm(s), 20, f"{server}'s warm spare")  # type: ignore[misc]


def ready_state(mesh: Mesh) -> tuple[int, dict[str, Any]]:
    try:
        r = mesh.http.get("/ready", timeout=2)
        return r.status_code, r.json()
    except (httpx.HTTPError, ValueError):
        return 0, {}


def slot_pids(mesh: Mesh, role: str, server: str | None = None) -> dict[int, int]:
    """process number (--slot) → pid of a role's processes (of one server, for upstreams)."""
    out = {}
    for pid in mesh.role_pids(role):
        words = cmdline(pid).split()
        if server is not None and words[words.index("--server") + 1] != server:
            continue
        out[int(words[words.index("--slot") + 1]) if "--slot" in words else 0] = pid
    return out


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def registered_pids(mesh: Mesh, server: str) -> set[int]:
    try:
        servers = mesh.http.get("/mcp-servers", timeout=2).json()
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {w["pid"] for s in servers if s["name"] == server for w in s["workers"]}


# -- checks shared by every fault -------------------------------------------------------------


def assert_every_request_answered(run: Run, *, connection_errors: bool = False) -> None:
    hung = run.by(lambda o: o.failure.startswith("TIMEOUT"))
    assert not hung, f"{len(hung)} requests hung until the client's own timeout"
    if not connection_errors:
        lost = run.by(lambda o: o.status is None)
        assert not lost, f"requests without an HTTP answer: {Counter(o.failure for o in lost)}"
    for o in run.outcomes:
        if o.status is not None and o.status != 200:
            assert o.error and "NOT JSON" not in o.error, (o.status, o.body)
            assert o.body.get("trace_id"), o.body
    slow = run.by(lambda o: o.took > CLIENT_LIMIT or o.body.get("latency_ms", 0) > MESH_LIMIT_MS)
    assert not slow, [
        (o.tool, o.status, round(o.took, 2), o.body.get("latency_ms"), o.error) for o in slow
    ]
    # and the fault is over: every client's calls succeed again
    for i in range(CLIENTS):
        mine = [o for o in run.outcomes if o.client == i and o.sent > run.t_back + 0.5]
        assert mine and all(o.ok for o in mine), [(o.status, o.error) for o in mine]


def assert_no_trace_lost(mesh: Mesh, run: Run) -> None:
    """Every trace_id returned to a client is stored exactly once (API and JSONL file)."""
    returned = [o.body["trace_id"] for o in run.outcomes if o.body.get("trace_id")]
    assert len(set(returned)) == len(returned), "trace ids reused"

    def stored() -> list[str]:
        r = mesh.http.get("/traces", params={"session": run.session, "limit": 10_000}, timeout=5)
        return [t["trace_id"] for t in r.json()] if r.status_code == 200 else []

    try:
        wait_until(
            lambda: set(returned) <= set(stored()),
            10,
            "every returned trace id in /traces",
            interval=0.1,
        )
    except AssertionError:
        missing = set(returned) - set(stored())
        raise AssertionError(
            f"{len(missing)} of {len(returned)} trace records lost, e.g. {sorted(missing)[:3]}"
        ) from None
    in_api = Counter(stored())
    assert max(in_api.values()) == 1, [t for t, n in in_api.items() if n > 1][:5]
    # And each says what the client was told: an allowed call whose upstream failed is traced
    # `allow` with the failure's status (the decision travels back with the error).
    records = {
        t["trace_id"]: t
        for t in mesh.http.get(
            "/traces", params={"session": run.session, "limit": 10_000}, timeout=5
        ).json()
    }
    told = {
        o.body["trace_id"]: (o.status, o.body["policy"])
        for o in run.outcomes
        if o.body.get("trace_id")
    }
    wrong = {
        t: (records[t]["status_code"], records[t]["policy"], seen)
        for t, seen in told.items()
        if (records[t]["status_code"], records[t]["policy"]) != seen
    }
    assert not wrong, f"traces that differ from the answers: {list(wrong.items())[:3]}"
    lines = (mesh.tmp / "traces.jsonl").read_text().splitlines()
    in_file = Counter(json.loads(line)["trace_id"] for line in lines)
    missing = set(returned) - set(in_file)
    assert not missing, f"{len(missing)} returned trace ids missing from the JSONL file"
    twice = [t for t in returned if in_file[t] != 1]
    assert not twice, f"trace ids written more than once to the JSONL file: {twice[:5]}"
    run.traces = len(returned)


def json_line(line: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:  # the last line of a killed worker's server may be cut
        return {}
    return message if isinstance(message, dict) else {}


def report(run: Run) -> None:
    print(f"\n{run.session}: {run.summary()}")
