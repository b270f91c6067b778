"""Crash isolation under load (issue 5): an upstream that hangs — its calls time out and are
cancelled upstream, the workers survive, other calls are served meanwhile. The last of the
faults on the mesh test_faults.py and test_faults_roles.py share (tests/e2e/faults.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.faults import (
    CLIENT_TIMEOUT,
    ECHO,
    LONG,
    UPSTREAM_TIMEOUT,
    Outcome,
    Run,
    assert_no_trace_lost,
    healthy_before,  # noqa: F401 - autouse: each test starts from a healthy mesh
    json_line,
    load_client,
    slot_pids,
)
from tests.e2e.mesh import Mesh
from tests.support import wait_until


@pytest.fixture(scope="module")
def mesh(faults_mesh: Mesh) -> Mesh:
    return faults_mesh


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
