"""Crash isolation under load (issue 5): the real process tree under supervisord, 24 concurrent
HTTP clients calling two upstreams (server-everything ×2 workers, server-filesystem ×1), and
one process killed at a time.

For every fault the same things are proven:

- every request gets an answer: a success or a clear JSON error, never a hang (the clients'
  own timeout is far above the mesh's deadlines and is never hit, and the mesh's own latency
  stays within the heartbeat window);
- calls that do not depend on the killed process keep succeeding during the fault;
- supervisord has the killed process back within 2 s (new pid, registered on the bus, /health 200);
- no trace record is lost: every trace_id handed to a client is stored exactly once, in
  `GET /traces` and in the JSONL trace file.

One mesh serves every test (each test starts from a healthy mesh and leaves one), so the file
stays within ~90 s. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import alive, cmdline, descendants, npm_server, wait_until

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


async def _client(
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
        asyncio.create_task(_client(mesh.url, session, i, tools[i % 2], stop, outcomes))
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


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    tmp = tmp_path_factory.mktemp("mesh")
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
    with running(Mesh(tmp, config), timeout=60) as m:
        yield m


@pytest.fixture(autouse=True)
def healthy_before(mesh: Mesh) -> None:
    wait_until(lambda: _health(mesh)[0] == 200, 20, "a healthy mesh before the fault")
    for server in ("everything", "fs"):
        wait_until(lambda s=server: mesh.spare_warm(s), 20, f"{server}'s warm spare")  # type: ignore[misc]


def _health(mesh: Mesh) -> tuple[int, dict[str, Any]]:
    try:
        r = mesh.http.get("/ready", timeout=2)
        return r.status_code, r.json()
    except (httpx.HTTPError, ValueError):
        return 0, {}


def _pids(mesh: Mesh, role: str, server: str | None = None) -> dict[int, int]:
    """process number (--slot) → pid of a role's processes (of one server, for upstreams)."""
    out = {}
    for pid in mesh.role_pids(role):
        words = cmdline(pid).split()
        if server is not None and words[words.index("--server") + 1] != server:
            continue
        out[int(words[words.index("--slot") + 1]) if "--slot" in words else 0] = pid
    return out


def _kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def _registered_pids(mesh: Mesh, server: str) -> set[int]:
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


def _json(line: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:  # the last line of a killed worker's server may be cut
        return {}
    return message if isinstance(message, dict) else {}


def report(run: Run) -> None:
    print(f"\n{run.session}: {run.summary()}")


# -- the faults -------------------------------------------------------------------------------


async def test_kill_upstream_worker(mesh: Mesh) -> None:
    """One of everything's two serving workers: only the calls it held fail (502 at once); the
    other worker serves the rest, fs never notices; the warm spare serves the dead worker's slot
    within TAKEOVER; the MCP server exits with the dead worker; supervisord's restart of it
    becomes the next spare."""
    serving = _registered_pids(mesh, "everything")
    victim = min(serving)
    server_procs = descendants(victim)

    def back() -> bool:
        now = _registered_pids(mesh, "everything")
        return len(now) == 2 and victim not in now

    run = await under_load(mesh, "kill-upstream-worker", lambda: _kill(victim), back)
    assert_every_request_answered(run)
    assert all(o.ok for o in run.by(lambda o: o.tool == FS)), "the other upstream was affected"
    failed = run.by(lambda o: not o.ok)
    for o in failed:
        assert o.status == 502, (o.status, o.error)
        assert o.error == (
            "upstream everything: its worker died during the call "
            "(upstream.everything: worker died)"
        ), o.error
    assert len(failed) <= CLIENTS // 2, "more failures than calls the dead worker can have held"
    wait_until(
        lambda: not any(alive(p) for p in server_procs), 5, "the dead worker's MCP server to exit"
    )
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < TAKEOVER, run.summary()
    wait_until(
        lambda: (
            victim not in _pids(mesh, "upstream", "everything").values()
            and mesh.spare_warm("everything")
        ),
        RESTART + 5,
        "a new warm spare",
    )


async def test_kill_upstream_server_process(mesh: Mesh) -> None:
    """The node process of fs's only serving worker: the worker notices at once (its calls get
    502) and hands its slot to the warm spare (fs calls get 503 for that moment), then starts a
    fresh server itself and becomes the spare; everything never notices."""
    (worker,) = _registered_pids(mesh, "fs")
    (node,) = [p for p in descendants(worker) if "node" in cmdline(p)][:1]

    def back() -> bool:
        now = _registered_pids(mesh, "fs")
        if not now or worker in now:
            return False
        probe = mesh.call("fs.list_allowed_directories", {"probe": time.monotonic()}, agent="probe")
        return probe.status_code == 200

    run = await under_load(mesh, "kill-upstream-server", lambda: _kill(node), back)
    assert alive(worker) and not alive(node), "the worker outlives its MCP server"
    wait_until(
        lambda: (
            mesh.spare_warm("fs")
            and (mesh.state / "slots" / f"upstream-fs.spare.{worker}").exists()
        ),
        RESTART + 5,
        "the worker, with a new MCP server, as the warm spare",
    )
    assert_every_request_answered(run)
    assert all(o.ok for o in run.by(lambda o: o.tool == ECHO)), "the other upstream was affected"
    for o in run.by(
        lambda o: not o.ok
    ):  # held by the dead server: gone; sent while replaced: unavailable
        # (process N exited with -9, or its stdout closed: whichever the worker saw first)
        gone = o.status == 502 and o.error.startswith("upstream 'fs' went away during tools/call (")
        unavailable = o.status == 503 and o.error.startswith("upstream unavailable: fs (")
        assert gone or unavailable, (o.status, o.error)
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < TAKEOVER, run.summary()


def _policy_slot(agent: str) -> int:
    """The policy worker the broker routes an agent to (rendezvous hashing, bus/routing.py)."""
    return max((0, 1), key=lambda s: zlib.crc32(f"policy:{s}".encode() + b"\0" + agent.encode()))


async def test_kill_policy_worker(mesh: Mesh) -> None:
    """Policy worker 0 of 2: agents it owned get 503 until the broker moves them (heartbeats),
    agents of worker 1 never notice."""
    before = _pids(mesh, "policy")
    assert set(before) == {0, 1}

    def back() -> bool:
        now = _pids(mesh, "policy")
        status, health = _health(mesh)
        return (
            len(now) == 2
            and before[0] not in now.values()
            and status == 200
            and health["services"]["policy"]["workers"] == 2
        )

    run = await under_load(mesh, "kill-policy-worker", lambda: _kill(before[0]), back)
    assert_every_request_answered(run)
    survivors = run.by(lambda o: _policy_slot(o.agent) == 1)
    assert survivors and all(o.ok for o in survivors), (
        "agents of the live policy worker were affected"
    )
    for o in run.by(lambda o: not o.ok):
        assert o.status == 503 and o.error == "policy service unavailable: policy: worker died", (
            o.error
        )
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < RESTART, run.summary()


async def test_kill_trace_writer(mesh: Mesh) -> None:
    """Tool calls never wait on the trace writer; the gateway's outbox keeps and re-sends what
    was not acknowledged, and the writer is idempotent by trace_id: nothing lost, nothing twice."""
    (before,) = _pids(mesh, "tracer").values()

    def back() -> bool:
        now = _pids(mesh, "tracer")
        workers = _health(mesh)[1].get("services", {}).get("traces", {}).get("workers")
        return bool(now) and before not in now.values() and workers == 1

    run = await under_load(mesh, "kill-trace-writer", lambda: _kill(before), back)
    assert_every_request_answered(run)
    assert all(o.ok for o in run.outcomes), "tool calls must not depend on the trace writer"
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < RESTART, run.summary()


async def test_kill_broker(mesh: Mesh) -> None:
    """Calls in flight fail at once (the clients see the connection drop), calls made while it
    is down fail fast with 503; it comes back, workers and the gateway reconnect by themselves."""
    (before,) = _pids(mesh, "broker").values()

    def back() -> bool:
        now = _pids(mesh, "broker")
        return bool(now) and before not in now.values() and _health(mesh)[0] == 200

    run = await under_load(mesh, "kill-broker", lambda: _kill(before), back)
    assert_every_request_answered(run)
    # (A quick enough restart can go unnoticed: a request waits up to 1 s for the connection.)
    for o in run.by(lambda o: not o.ok):
        assert o.status in (502, 503), (o.status, o.error)
        assert o.error.startswith(
            ("policy service unavailable: ", "upstream unavailable: ", "mesh bus unavailable: ")
        ), o.error
        assert "broker" in o.error or "no live worker" in o.error, o.error
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < RESTART, run.summary()


async def test_kill_gateway(mesh: Mesh) -> None:
    """Clients see connection errors while supervisord restarts it, then success again."""
    (before,) = _pids(mesh, "gateway").values()

    def back() -> bool:
        now = _pids(mesh, "gateway")
        status, health = _health(mesh)
        return (
            bool(now)
            and before not in now.values()
            and status == 200
            and health["pid"] in now.values()
        )

    run = await under_load(mesh, "kill-gateway", lambda: _kill(before), back)
    assert_every_request_answered(run, connection_errors=True)
    gap = run.by(lambda o: o.status is None)
    assert gap and {o.failure for o in gap} <= {
        "ConnectError",
        "ReadError",
        "RemoteProtocolError",
    }, gap[:3]
    assert all(o.ok for o in run.by(lambda o: o.status is not None)), (
        "answered requests must succeed"
    )
    assert run.recovery < RESTART, run.summary()
    # The trace outbox journals each record before the answer goes out; the restarted gateway
    # replays what the killed one had not had acknowledged.
    assert_no_trace_lost(mesh, run)
    report(run)


async def test_hung_upstream_times_out_and_is_cancelled(mesh: Mesh) -> None:
    """Tool calls that never answer: 504 naming server and tool after timeout_seconds, the calls
    cancelled upstream (notifications/cancelled on the MCP server's stdin), the workers serving
    other calls during and after."""
    workers = _pids(mesh, "upstream", "everything")
    session = "hung-upstream"
    headers = {"Authorization": "Bearer agent:hung", "X-Session-Id": session}

    async def hang(http: httpx.AsyncClient, n: int) -> Outcome:
        started = time.monotonic()
        r = await http.post(
            f"/tool/{LONG}", json={"params": {"duration": 3600, "steps": 1, "n": n}}
        )
        return Outcome(
            -1, LONG, "hung", started, time.monotonic() - started, r.status_code, r.json()
        )

    stop = asyncio.Event()
    echoes: list[Outcome] = []
    load = [
        asyncio.create_task(_client(mesh.url, session, i, ECHO, stop, echoes)) for i in range(8)
    ]
    async with httpx.AsyncClient(
        base_url=mesh.url, timeout=CLIENT_TIMEOUT, headers=headers
    ) as http:
        hung = await asyncio.gather(*(hang(http, n) for n in range(4)))
    await asyncio.sleep(0.5)  # and after
    stop.set()
    await asyncio.gather(*load)
    for o in hung:
        assert o.status == 504, o.body
        assert o.error == (
            f"upstream timeout: {LONG} gave no answer in {UPSTREAM_TIMEOUT:g}s (cancelled upstream)"
        ), o.error
        assert UPSTREAM_TIMEOUT - 0.1 < o.took < UPSTREAM_TIMEOUT + 1.0, o.took
    during = [o for o in echoes if o.sent < max(h.sent + h.took for h in hung)]
    assert during and all(o.ok for o in echoes), Counter(o.status for o in echoes)
    assert max(o.took for o in echoes) < 1.0
    assert _pids(mesh, "upstream", "everything") == workers, "the workers must survive hung calls"
    # Each MCP server was told: a notifications/cancelled for every hung call it got.
    hung_calls = cancelled = 0
    for log_file in mesh.tmp.glob("everything-stdin.*.log"):
        sent = [_json(line) for line in log_file.read_text().splitlines()]
        calls = {
            m["id"]
            for m in sent
            if m.get("method") == "tools/call"
            and m["params"]["name"] == "trigger-long-running-operation"
        }
        told = {
            m["params"]["requestId"] for m in sent if m.get("method") == "notifications/cancelled"
        }
        assert calls <= told, (log_file, calls - told)
        hung_calls, cancelled = hung_calls + len(calls), cancelled + len(told & calls)
    assert hung_calls == len(hung) == cancelled
    # and the broker holds nothing for them any more
    wait_until(
        lambda: all(
            w["inflight"] == 0 for s in mesh.http.get("/mcp-servers").json() for w in s["workers"]
        ),
        3,
        "no call in flight",
    )
    run = Run(session, echoes + hung)
    assert_no_trace_lost(mesh, run)
    print(
        f"\n{session}: {len(hung)} hung calls → 504 in {[round(o.took, 2) for o in hung]}s, "
        f"{cancelled} notifications/cancelled, {len(echoes)} echo calls all 200 "
        f"({len(during)} during), {run.traces} trace ids stored once"
    )
