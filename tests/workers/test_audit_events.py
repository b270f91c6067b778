"""Audit events (workers/audit.py) over a real broker into the real trace writer's chained file:
approval resolutions and grants made or revoked become lines of the chain; events wait in the
sender's table while the trace writer is away, and survive the sender's restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.approval_messages import ApprovalResolve, ApprovalSubmit, GrantCreate, GrantRevoke
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.messages import TRACES
from bus.worker import BusWorker
from mesh_config.model import Config
from workers.approval import ApprovalService
from workers.approval_store import StateStore
from workers.audit import AuditOutbox, audit_event
from workers.audit_verify import verify
from workers.tracer import TraceService, TraceStore


async def until(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Tracer:
    """The trace writer's service on the bus, started and stopped at will."""

    def __init__(self, endpoints: Endpoints, tmp: Path) -> None:
        self.endpoints, self.tmp = endpoints, tmp
        self.task: asyncio.Task[None] | None = None
        self.store: TraceStore | None = None

    async def start(self) -> None:
        self.store = TraceStore(self.tmp / "traces.db", self.tmp / "traces.jsonl")
        worker = BusWorker(self.endpoints.requests, TRACES, TraceService(self.store).handle)
        self.task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.connected.wait(), 5)

    async def stop(self) -> None:
        assert self.task is not None and self.store is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.store.close()


async def test_resolutions_and_grants_are_chained_into_the_trace_file(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    tracer = Tracer(endpoints, tmp_path)
    await tracer.start()
    async with BusClient(endpoints.requests) as client:
        store = StateStore(tmp_path / "state.db")
        outbox = AuditOutbox(client, store.db)  # on the store's connection: one commit each
        outbox.start()
        service = ApprovalService(store, Config(), audit=outbox)
        submitted = await service.op_submit(
            ApprovalSubmit(agent="claude", tool="fs.write_file", trace_id="t1")
        )
        await service.op_resolve(
            ApprovalResolve(id=submitted["id"], decision="deny", resolved_by="alice")
        )
        grant = await service.op_grant_create(
            GrantCreate(agent="claude", tools=["fs.*"], duration="5m", created_by="bob")
        )
        await service.op_grant_revoke(GrantRevoke(id=grant["id"], revoked_by="carol"))
        trace = tmp_path / "traces.jsonl"
        await until(lambda: len(lines(trace)) == 3, "three audit lines")
        await outbox.stop()
    await tracer.stop()
    got = [(r["kind"], r["action"], r["actor"], r["subject"]) for r in lines(trace)]
    assert got == [
        ("audit", "approval.resolved", "alice", submitted["id"]),
        ("audit", "grant.created", "bob", grant["id"]),
        ("audit", "grant.revoked", "carol", grant["id"]),
    ]
    first = lines(trace)[0]["detail"]
    assert first == {
        "status": "denied",
        "agent_id": "claude",
        "tool": "fs.write_file",
        "trace_id": "t1",
    }
    assert lines(trace)[1]["detail"]["tools"] == ["fs.*"]
    result = verify([trace])
    assert result.error is None and result.records == 3


async def test_events_wait_for_the_trace_writer_and_survive_a_restart(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    trace = tmp_path / "traces.jsonl"
    async with BusClient(endpoints.requests) as client:
        outbox = AuditOutbox(client, StateStore(tmp_path / "state.db").db)
        outbox.start()
        outbox.add(audit_event("grant.created", "ops", "g1"))
        await until(lambda: outbox.backlog == 1, "the event stored")
        await asyncio.sleep(0.3)  # the trace writer is away: nothing is lost, nothing written
        assert outbox.backlog == 1 and not trace.exists()
        await outbox.stop()  # the sender's process ends with an event unsent
    tracer = Tracer(endpoints, tmp_path)
    await tracer.start()
    async with BusClient(endpoints.requests) as client:
        again = AuditOutbox(client, StateStore(tmp_path / "state.db").db)  # its next start
        again.start()
        again.add(audit_event("grant.revoked", "ops", "g1"))
        await until(lambda: len(lines(trace)) == 2, "both events written")
        assert again.backlog == 0
        await again.stop()
    await tracer.stop()
    assert [r["action"] for r in lines(trace)] == ["grant.created", "grant.revoked"]
    assert verify([trace]).error is None
