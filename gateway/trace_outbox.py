"""Trace records leave a front-end through this outbox: batched, sent to the `traces` service,
kept until acknowledged and re-sent after a failure — so no record is lost while the trace
writer restarts. The call path only appends; it never waits on the trace writer.

Read-your-writes: a reader of traces on the same front-end (`GET /traces`) first awaits
`settled()`, which returns once every record queued before it was acknowledged, i.e. stored and
visible to the trace writer's queries; the sender skips its linger while someone waits.

With a journal directory the outbox also survives its own process being killed: every record
is appended to a journal file (one write(2), before the caller answers its client) and replayed
by the next front-end that starts; the trace writer is idempotent by trace_id, so replaying
what was already stored is harmless. Each process holds an exclusive flock on its journal:
a journal nobody holds belongs to a dead process and is replayed, then deleted.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bus import json_values
from bus.client import BusClient
from bus.errors import BusError
from bus.messages import TRACES, TraceRecord

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_BACKLOG = 200_000  # past this new records are dropped, loudly (memory is finite)
RETRY_DELAY = 0.2
LINGER = 0.02  # let records gather into one batch: one bus round trip per batch, not per call
SEGMENT_RECORDS = (
    10_000  # journal segment size: a segment is deleted once all its records are acked
)


Record = dict[str, Any]  # a TraceRecord map (bus.messages.trace_record)


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.written = 0
        self.unacked = 0

    def close(self, delete: bool) -> None:
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


class TraceOutbox:
    def __init__(
        self, client: BusClient, journal_dir: Path | None = None, name: str = "frontend"
    ) -> None:
        self.client = client
        self._queue: deque[tuple[Record, _Segment | None]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.replayed = 0
        self._dir = journal_dir
        self._name = f"{name}-{os.getpid()}"
        self._seq = 0
        self._segment: _Segment | None = None
        self._orphans: list[_Segment] = []
        self._queued_total = 0  # records ever queued (sequence numbers: 1.._queued_total)
        self._acked_total = 0  # of which acknowledged, in order (the queue is FIFO)
        self._acked = asyncio.Condition()
        self._readers = 0  # settled() calls waiting: send now, do not linger
        if journal_dir is not None:
            journal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._adopt_orphans()
            self._rotate()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        if self._queue:
            self._wakeup.set()

    def add(self, record: Record) -> None:
        if len(self._queue) >= MAX_BACKLOG:
            self.dropped += 1
            log.error("trace backlog full (%d): dropped trace %s", MAX_BACKLOG, record["trace_id"])
            return
        segment = self._segment
        if segment is not None:
            os.write(segment.fd, json_values.dumps(record) + b"\n")
            segment.written += 1
            segment.unacked += 1
            if segment.written >= SEGMENT_RECORDS:
                self._rotate()
        self._queue.append((record, segment))
        self._queued_total += 1
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def settled(self, timeout: float) -> bool:
        """Wait until every record queued before this call is acknowledged (records queued while
        waiting are not waited for). False if the timeout passed first."""
        target = self._queued_total
        if self._acked_total >= target:
            return True
        self._readers += 1
        self._wakeup.set()
        try:
            async with self._acked:
                await asyncio.wait_for(
                    self._acked.wait_for(lambda: self._acked_total >= target), timeout
                )
            return True
        except TimeoutError:
            return False
        finally:
            self._readers -= 1

    async def flush(self, timeout: float) -> None:
        """Wait until everything queued so far is acknowledged (or the timeout passes)."""
        await self.settled(timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._segment is not None:  # all acked: nothing to replay; else the next one will
            self._segment.close(delete=not self._queue)
            self._segment = None

    # -- journal ---------------------------------------------------------------------------

    def _rotate(self) -> None:
        assert self._dir is not None
        old = self._segment
        self._seq += 1
        self._segment = _Segment(self._dir / f"{self._name}.{self._seq}.jsonl")
        if old is not None and old.unacked == 0:
            old.close(delete=True)
        elif old is not None:
            self._orphans.append(old)  # closed once its records are acked

    def _adopt_orphans(self) -> None:
        assert self._dir is not None
        for path in sorted(self._dir.glob("*.jsonl")):
            try:
                segment = _Segment(path)
            except BlockingIOError:
                continue  # a live front-end's journal
            except OSError as exc:
                log.error("trace journal %s: %s", path, exc)
                continue
            records = []
            with open(path, "rb") as f:
                for line in f:
                    try:
                        records.append(TraceRecord.model_validate_json(line).dump())
                    except ValidationError:
                        continue  # cut by the crash
            segment.unacked = len(records)
            for record in records:
                self._queue.append((record, segment))
            self.replayed += len(records)
            self._queued_total += len(records)
            if records:
                log.warning(
                    "replaying %d trace records from %s (a front-end died)", len(records), path.name
                )
                self._orphans.append(segment)
            else:
                segment.close(delete=True)

    def _release(self, batch: list[tuple[Record, _Segment | None]]) -> None:
        for _, segment in batch:
            if segment is not None:
                segment.unacked -= 1
        for segment in [s for s in self._orphans if s.unacked == 0]:
            self._orphans.remove(segment)
            segment.close(delete=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._queue) < MAX_BATCH and not self._readers:
                await asyncio.sleep(LINGER)
            self._wakeup.clear()
            while self._queue:
                batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
                try:
                    # The TraceBatch map, built directly: its records already are TraceRecord maps.
                    body = {"op": "record", "records": [r for r, _ in batch]}
                    await self.client.request(TRACES, body, timeout=5.0)
                except BusError as exc:
                    log.warning(
                        "trace writer unavailable (%s); %d records kept",
                        exc.message,
                        len(self._queue),
                    )
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                for _ in batch:
                    self._queue.popleft()
                self._release(batch)
                self.sent += len(batch)
                self._acked_total += len(batch)
                async with self._acked:
                    self._acked.notify_all()
