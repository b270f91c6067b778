"""An upstream worker whose MCP server cannot be kept running backs off before the next start
(1 s, 2 s, 4 s… up to 30 s; a server that ran HEALTHY_RUN seconds or more is restarted at once),
and while it waits it says why on the bus: it registers as a worker of `upstream-down.<server>`
(bus/PROTOCOL.md) with an `UpstreamDownMeta`. The broker's `mmi.services` report carries that
to the front-ends, which show it in /health, /mcp-servers and the 503 of a call to the server.
"""

from __future__ import annotations

import asyncio
import os
import time

from bus.messages import UpstreamDownMeta, upstream_down_service
from bus.worker import BusWorker, Request

FIRST = 1.0  # s before the start after a first failure; doubled after each further one
CAP = 30.0  # s, the longest wait between two starts
HEALTHY_RUN = 5.0  # s: an upstream that served this long did not "fail to start"


class Backoff:
    """How long to wait before the next start, given how the last one went."""

    def __init__(
        self, first: float = FIRST, cap: float = CAP, healthy: float = HEALTHY_RUN
    ) -> None:
        self.first, self.cap, self.healthy = first, cap, healthy
        self.failures = 0  # in a row
        self.since = 0.0  # epoch seconds of the first of them

    def after(self, ran_for: float) -> float:
        """The wait before the next start, after an upstream that served `ran_for` seconds
        (0 when it failed to start)."""
        if ran_for >= self.healthy:
            self.failures = 0
            return 0.0
        if self.failures == 0:
            self.since = time.time()
        self.failures += 1
        return float(min(self.cap, self.first * 2.0 ** (self.failures - 1)))


class DownReport:
    """This worker's `upstream-down.<server>` registration: made (or updated) when a start
    fails, kept through the next attempt, dropped once an upstream runs again."""

    def __init__(self, endpoint: str, server: str, slot: str) -> None:
        self.endpoint, self.server, self.slot = endpoint, server, slot
        self._worker: BusWorker | None = None
        self._task: asyncio.Task[None] | None = None

    def say(self, reason: str, delay: float, backoff: Backoff) -> None:
        meta = UpstreamDownMeta(
            server=self.server,
            reason=reason,
            failures=backoff.failures,
            since=backoff.since,
            retry_at=time.time() + delay,
            pid=os.getpid(),
        ).dump()
        if self._worker is not None:
            self._worker.update_meta(meta)
            return

        async def status(request: Request) -> object:  # anyone may ask; nobody has to
            return self._worker.meta if self._worker is not None else meta

        self._worker = BusWorker(
            self.endpoint,
            upstream_down_service(self.server),
            status,
            capacity=1,
            slot=self.slot,
            meta=meta,
        )
        self._task = asyncio.create_task(self._worker.run())

    async def clear(self) -> None:
        if self._worker is None or self._task is None:
            return
        self._worker.stop()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._worker = self._task = None
