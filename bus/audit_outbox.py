"""Audit events — an approval resolved, a grant made or revoked, a freeze, a tool definition
changed or accepted — from the process that did it (a worker or a front-end) to the trace
writer, which chains them into the trace file beside the call records (docs/audit.md).

    outbox = AuditOutbox(client, store.db)          # once per process; start() in its loop
    with store.transaction():                       # the change and its event: one commit
        grant = store.grant_create(...)
        outbox.add(audit_event("grant.created", actor, grant_id, {"agent": ..., "tools": [...]}))

`add` never waits on the trace writer: the event is stored in a table (`audit_outbox`) of the
database whose change it records, on that change's connection and inside its transaction (a
crash between two commits would keep the change and lose its event); a task sends the table in
batches as `AuditBatch` to `traces`, deletes them once acknowledged, and sends them again after a
failure or a restart of either side (the trace writer keeps each id once). Processes may share
one database file: a sender deletes only up to the last row of the batch it sent, and an event
two of them send is still written once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from bus import frames
from bus.client import BusClient
from bus.errors import BusError
from bus.messages import TRACES, AuditEvent

log = logging.getLogger(__name__)

MAX_BATCH = 500
RETRY_DELAY = 0.5


def audit_event(
    action: str, actor: str, subject: str, detail: dict[str, Any] | None = None
) -> AuditEvent:
    """An audit event of now, with a new id. `action`: `<noun>.<verb>` (grant.created)."""
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return AuditEvent(
        id=uuid.uuid4().hex,
        action=action,
        actor=actor,
        subject=subject,
        detail=detail or {},
        timestamp=now,
    )


class AuditOutbox:
    def __init__(self, client: BusClient, db: sqlite3.Connection) -> None:
        """`db`: the connection (autocommit, `isolation_level=None`) the caller writes the
        changes on that the events record."""
        self.client = client
        self.db = db
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS audit_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " event BLOB NOT NULL)"
        )
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wakeup.set()  # what a previous run left unsent

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(self, event: AuditEvent) -> None:
        self.db.execute(
            "INSERT INTO audit_outbox (event) VALUES (?)", (orjson.dumps(event.dump()),)
        )
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM audit_outbox").fetchone()[0])

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while rows := self.db.execute(
                "SELECT seq, event FROM audit_outbox ORDER BY seq LIMIT ?", (MAX_BATCH,)
            ).fetchall():
                body = {"op": "audit", "events": [orjson.loads(event) for _, event in rows]}
                try:
                    await self.client.request(TRACES, body, timeout=5.0)
                except BusError as exc:
                    if exc.code == frames.BAD_REQUEST:  # never accepted: sending again won't help
                        log.error(
                            "trace writer refused %d audit events: %s", len(rows), exc.message
                        )
                        self.db.execute("DELETE FROM audit_outbox WHERE seq <= ?", (rows[-1][0],))
                        continue
                    log.warning(
                        "trace writer unavailable (%s): %d audit events kept",
                        exc.message,
                        len(rows),
                    )
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                self.db.execute("DELETE FROM audit_outbox WHERE seq <= ?", (rows[-1][0],))
                self.sent += len(rows)
