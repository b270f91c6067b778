"""Crash isolation under load (issue 5): one of the mesh's own roles killed under 24 concurrent
HTTP clients — a policy worker, the trace writer, the broker, a gateway. What every fault must
pass, and the mesh (shared with test_faults.py): tests/e2e/faults.py. Loopback only.
"""

from __future__ import annotations

import zlib

import pytest

from tests.e2e.faults import (
    RESTART,
    assert_every_request_answered,
    assert_no_trace_lost,
    healthy_before,  # noqa: F401 - autouse: each test starts from a healthy mesh
    kill,
    ready_state,
    report,
    slot_pids,
    under_load,
)
from tests.e2e.mesh import Mesh


@pytest.fixture(scope="module")
def mesh(faults_mesh: Mesh) -> Mesh:
    return faults_mesh


def _policy_slot(agent: str) -> int:
    """The policy worker the broker routes an agent to (rendezvous hashing, bus/routing.py)."""
    return max((0, 1), key=lambda s: zlib.crc32(f"policy:{s}".encode() + b"\0" + agent.encode()))


async def test_kill_policy_worker(mesh: Mesh) -> None:
    """Policy worker 0 of 2: agents it owned get 503 until the broker moves them (heartbeats),
    agents of worker 1 never notice."""
    before = slot_pids(mesh, "policy")
    assert set(before) == {0, 1}

    def back() -> bool:
        now = slot_pids(mesh, "policy")
        status, health = ready_state(mesh)
        return (
            len(now) == 2
            and before[0] not in now.values()
            and status == 200
            and health["services"]["policy"]["workers"] == 2
        )

    run = await under_load(mesh, "kill-policy-worker", lambda: kill(before[0]), back)
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
    (before,) = slot_pids(mesh, "tracer").values()

    def back() -> bool:
        now = slot_pids(mesh, "tracer")
        workers = ready_state(mesh)[1].get("services", {}).get("traces", {}).get("workers")
        return bool(now) and before not in now.values() and workers == 1

    run = await under_load(mesh, "kill-trace-writer", lambda: kill(before), back)
    assert_every_request_answered(run)
    assert all(o.ok for o in run.outcomes), "tool calls must not depend on the trace writer"
    assert_no_trace_lost(mesh, run)
    report(run)
    assert run.recovery < RESTART, run.summary()


async def test_kill_broker(mesh: Mesh) -> None:
    """Calls in flight fail at once (the clients see the connection drop), calls made while it
    is down fail fast with 503; it comes back, workers and the gateway reconnect by themselves."""
    (before,) = slot_pids(mesh, "broker").values()

    def back() -> bool:
        now = slot_pids(mesh, "broker")
        return bool(now) and before not in now.values() and ready_state(mesh)[0] == 200

    run = await under_load(mesh, "kill-broker", lambda: kill(before), back)
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
    (before,) = slot_pids(mesh, "gateway").values()

    def back() -> bool:
        now = slot_pids(mesh, "gateway")
        status, health = ready_state(mesh)
        return (
            bool(now)
            and before not in now.values()
            and status == 200
            and health["pid"] in now.values()
        )

    run = await under_load(mesh, "kill-gateway", lambda: kill(before), back)
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
