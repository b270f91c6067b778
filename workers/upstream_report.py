"""An upstream worker process's lifecycle on the bus (bus/PROTOCOL.md, "Upstream lifecycle").

For its whole life the process is a worker of `upstream-state.<server>` (capacity 1, never
sent tool calls) whose metadata is its `UpstreamState`. On each transition
(workers/upstream_lifecycle.py) it updates that metadata (UPDATE: the broker then publishes
`worker.upstream-state.<server>.updated`) and publishes `upstream.<server>.<state>` (EVENT).
The broker's `mmi.services` report carries the latest state to front-ends that were not
listening; they show it in /health, /ready, /mcp-servers and the 503 of a call to a server
that is down.
"""

from __future__ import annotations

import asyncio

from bus.messages import UpstreamState, upstream_state_service, upstream_state_topic
from bus.worker import BusWorker, Request


class StateReport:
    """The `upstream-state.<server>` registration of one process: `emit` is its Lifecycle's."""

    def __init__(self, endpoint: str, first: UpstreamState) -> None:
        self._worker = BusWorker(
            endpoint,
            upstream_state_service(first.server),
            self._status,
            capacity=1,
            slot=first.instance,
            meta=first.dump(),
        )
        self._task = asyncio.create_task(self._worker.run())

    def emit(self, state: UpstreamState) -> None:
        body = state.dump()
        self._worker.update_meta(body)
        self._worker.publish(upstream_state_topic(state.server, state.state), body)

    async def _status(self, request: Request) -> object:  # anyone may ask; nobody has to
        return self._worker.meta

    async def close(self) -> None:
        self._worker.stop()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
