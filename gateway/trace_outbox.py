"""Trace records leave a front-end through this outbox: batched, sent to the `traces` service,
kept until acknowledged and re-sent after a failure — so no record is lost while the trace
writer restarts. The call path only appends; it never waits on the trace writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from bus.client import BusClient
from bus.errors import BusError
from bus.messages import TRACES, TraceBatch, TraceRecord

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_BACKLOG = 200_000  # past this new records are dropped, loudly (memory is finite)
RETRY_DELAY = 0.2
LINGER = 0.02  # let records gather into one batch: one bus round trip per batch, not per call


class TraceOutbox:
    def __init__(self, client: BusClient) -> None:
        self.client = client
        self._queue: deque[TraceRecord] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, record: TraceRecord) -> None:
        if len(self._queue) >= MAX_BACKLOG:
            self.dropped += 1
            log.error("trace backlog full (%d): dropped trace %s", MAX_BACKLOG, record.trace_id)
            return
        self._queue.append(record)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def flush(self, timeout: float) -> None:
        """Wait until everything queued so far is acknowledged (or the timeout passes)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue and loop.time() < end:
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float = 2.0) -> None:
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._queue) < MAX_BATCH:
                await asyncio.sleep(LINGER)
            self._wakeup.clear()
            while self._queue:
                batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
                try:
                    await self.client.request(TRACES, TraceBatch(records=batch).dump(), timeout=5.0)
                except BusError as exc:
                    log.warning("trace writer unavailable (%s); %d records kept", exc.message, len(self._queue))
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                for _ in batch:
                    self._queue.popleft()
                self.sent += len(batch)
