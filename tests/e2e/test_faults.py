"""Crash isolation under load (issue 5): the real process tree under supervisord, 24 concurrent
HTTP clients calling two upstreams (server-everything ×2 workers, server-filesystem ×1), and
one upstream process killed at a time — a worker, its MCP server — or an upstream that hangs.
What every fault must pass, and the mesh (shared with test_faults_roles.py, the mesh's own
roles killed): tests/e2e/faults.py. Loopback only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.faults import (
    CLIENT_TIMEOUT,
    CLIENTS,
    ECHO,
    FS,
    LONG,
    RESTART,
    TAKEOVER,
    UPSTREAM_TIMEOUT,
    Outcome,
    Run,
    assert_every_request_answered,
    assert_no_trace_lost,
    healthy_before,  # noqa: F401 - autouse: each test starts from a healthy mesh
    json_line,
    kill,
    load_client,
    registered_pids,
    report,
    slot_pids,
    under_load,
)
from tests.e2e.mesh import Mesh
from tests.support import alive, cmdline, descendants, wait_until


@pytest.fixture(scope="module")
def mesh(faults_mesh: Mesh) -> Mesh:
    return faults_mesh


# -- the faults -------------------------------------------------------------------------------


async def test_kill_upstream_worker(mesh: Mesh) -> None:
    """One of everything's two serving workers: only the calls it held fail (502 at once); the
    other worker serves the rest, fs never notices; the warm spare serves the dead worker's slot
    within TAKEOVER; the MCP server exits with the dead worker; supervisord's restart of it
    becomes the next spare."""
    serving = registered_pids(mesh, "everything")
    victim = min(serving)
    server_procs = descendants(victim)

    def back() -> bool:
        now = registered_pids(mesh, "everything")
        return len(now) == 2 and victim not in now

    run = await under_load(mesh, "kill-upstream-worker", lambda: kill(victim), back)
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
            victim not in slot_pids(mesh, "upstream", "everything").values()
            and mesh.spare_warm("everything")
        ),
        RESTART + 5,
        "a new warm spare",
    )


async def test_kill_upstream_server_process(mesh: Mesh) -> None:
    """The node process of fs's only serving worker: the worker notices at once (its calls get
    502) and hands its slot to the warm spare (fs calls get 503 for that moment), then starts a
    fresh server itself and becomes the spare; everything never notices."""
    (worker,) = registered_pids(mesh, "fs")
    (node,) = [p for p in descendants(worker) if "node" in cmdline(p)][:1]

    def back() -> bool:
        now = registered_pids(mesh, "fs")
        if not now or worker in now:
            return False
        probe = mesh.call("fs.list_allowed_directories", {"probe": time.monotonic()}, agent="probe")
        return probe.status_code == 200

    run = await under_load(mesh, "kill-upstream-server", lambda: kill(node), back)
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


async def test_hung_upstream_times_out_and_is_cancelled(mesh: Mesh) -> None:
    """Tool calls that never answer: 504 naming server and tool after timeout_seconds, the calls
    cancelled upstream (notifications/cancelled on the MCP server's stdin), the workers serving
    other calls during and after."""
    workers = slot_pids(mesh, "upstream", "everything")
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
        asyncio.create_task(load_client(mesh.url, session, i, ECHO, stop, echoes)) for i in range(8)
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
    assert slot_pids(mesh, "upstream", "everything") == workers, (
        "the workers must survive hung calls"
    )
    # Each MCP server was told: a notifications/cancelled for every hung call it got.
    hung_calls = cancelled = 0
    for log_file in mesh.tmp.glob("everything-stdin.*.log"):
        sent = [json_line(line) for line in log_file.read_text().splitlines()]
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
