"""An audit event and the change it records are one commit: the approval worker, a real process
on the real bus, killed at the boundary between the two keeps both or neither, and an event
committed before the kill reaches the trace file after the worker's restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.approval_messages import (
    ApprovalGet,
    ApprovalSubmit,
    FreezeCreate,
    FreezeList,
    GrantCreate,
    GrantList,
)
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.messages import APPROVAL
from tests.workers.test_audit_events import Tracer, lines, until

REPO = Path(__file__).resolve().parents[2]
CRASH = 70  # the worker's exit status when the test's crash point is reached

# The approval worker's `run`, with a crash point: `none`; `before-audit` (the change written in
# its transaction, the audit event not yet); `after-commit` (both committed, the reply not sent).
WORKER = f"""
import asyncio, contextlib, os, sys
from pathlib import Path
from bus.audit_outbox import AuditOutbox
from mesh_config.model import Config
from workers import approval
from workers.approval_store import StateStore

endpoint, db, crash = sys.argv[1:4]
if crash == "before-audit":
    AuditOutbox.add = lambda self, event: os._exit({CRASH})
elif crash == "after-commit":
    committed = StateStore.transaction

    @contextlib.contextmanager
    def then_crash(self):
        with committed(self):
            yield
        os._exit({CRASH})

    StateStore.transaction = then_crash
asyncio.run(approval.run(endpoint, Path(db), Config()))
"""


class Worker:
    def __init__(self, endpoints: Endpoints, db: Path) -> None:
        self.endpoints, self.db = endpoints, db
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash: str = "none") -> None:
        argv = [sys.executable, "-c", WORKER, self.endpoints.requests, str(self.db), crash]
        env = os.environ | {"PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env)

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def worker(endpoints: Endpoints, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(endpoints, tmp_path / "state.db")
    yield w
    w.stop()


async def grants(client: BusClient) -> list[dict[str, object]]:
    """The active grants, once the (new) worker answers."""
    deadline = time.monotonic() + 15
    while True:
        try:
            reply = await client.request(APPROVAL, GrantList().dump(), timeout=2)
            return list(reply["grants"])
        except BusError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def outbox_backlog(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_outbox").fetchone()[0])


def grant(agent: str) -> dict[str, object]:
    return GrantCreate(agent=agent, tools=["fs.*"], duration="5m", created_by="ops").dump()


async def test_a_crash_between_a_grant_and_its_audit_event_keeps_neither(
    broker: Broker, endpoints: Endpoints, tmp_path: Path, worker: Worker
) -> None:
    tracer = Tracer(endpoints, tmp_path)
    await tracer.start()
    trace = tmp_path / "traces.jsonl"
    async with BusClient(endpoints.requests) as client:
        worker.start(crash="before-audit")
        assert await grants(client) == []
        with pytest.raises(BusError):  # the operator hears no success
            await client.request(APPROVAL, grant("lost"), timeout=3)
        assert worker.wait() == CRASH
        worker.start()
        assert await grants(client) == []  # the grant went with its event
        assert outbox_backlog(worker.db) == 0
        kept = await client.request(APPROVAL, grant("kept"), timeout=5)
        await until(lambda: len(lines(trace)) == 1, "the next grant's event")
    await tracer.stop()
    assert [(r["action"], r["subject"]) for r in lines(trace)] == [("grant.created", kept["id"])]


async def test_an_event_committed_with_its_grant_reaches_the_trace_file_after_a_crash(
    broker: Broker, endpoints: Endpoints, tmp_path: Path, worker: Worker
) -> None:
    tracer = Tracer(endpoints, tmp_path)
    await tracer.start()
    trace = tmp_path / "traces.jsonl"
    async with BusClient(endpoints.requests) as client:
        worker.start(crash="after-commit")
        assert await grants(client) == []
        with pytest.raises(BusError):
            await client.request(APPROVAL, grant("claude"), timeout=3)
        assert worker.wait() == CRASH
        worker.start()
        [stored] = await grants(client)  # committed before the crash
        await until(lambda: len(lines(trace)) == 1, "the grant's event, sent after the restart")
    await tracer.stop()
    [event] = lines(trace)
    assert (event["action"], event["subject"], event["detail"]["agent"]) == (
        "grant.created",
        stored["id"],
        "claude",
    )


async def test_a_crash_inside_a_freeze_keeps_neither_the_freeze_nor_its_denials(
    broker: Broker, endpoints: Endpoints, tmp_path: Path, worker: Worker
) -> None:
    """The freeze, the pending approvals it denies and their audit events are one commit."""
    tracer = Tracer(endpoints, tmp_path)
    await tracer.start()
    trace = tmp_path / "traces.jsonl"
    async with BusClient(endpoints.requests) as client:
        worker.start(crash="before-audit")  # at the first denial's event
        await grants(client)
        submit = ApprovalSubmit(agent="claude", tool="fs.write_file").dump()
        pending = await client.request(APPROVAL, submit, timeout=5)
        freeze = FreezeCreate(agent="claude", reason="leaking", created_by="ops").dump()
        with pytest.raises(BusError):
            await client.request(APPROVAL, freeze, timeout=3)
        assert worker.wait() == CRASH
        worker.start()
        await grants(client)
        assert (await client.request(APPROVAL, FreezeList().dump(), timeout=5))["freezes"] == []
        get = ApprovalGet(id=pending["id"], raw=True).dump()
        assert (await client.request(APPROVAL, get, timeout=5))["approval"]["status"] == "pending"
        assert outbox_backlog(worker.db) == 0
        again = await client.request(APPROVAL, freeze, timeout=5)  # the operator tries again
        await until(lambda: len(lines(trace)) == 2, "the denial's and the freeze's events")
    await tracer.stop()
    assert [(r["action"], r["subject"]) for r in lines(trace)] == [
        ("approval.resolved", pending["id"]),
        ("freeze.created", again["id"]),
    ]
    assert lines(trace)[1]["detail"]["denied"] == 1
