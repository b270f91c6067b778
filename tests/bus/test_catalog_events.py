"""The gateway's catalogue follows the broker's worker events: a worker that registers, changes
its tools, or dies shows within milliseconds, not at the next periodic refresh."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.events import Publisher
from bus.worker import BusWorker, Request
from gateway import catalog as catalog_module
from gateway.catalog import Catalog

FAST = 0.5  # s; the periodic refresh (REFRESH_INTERVAL) is twice as slow


async def _noop(request: Request) -> Any:
    return None


async def _until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "not within the time"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def _subscribed(catalog: Catalog, endpoints: Endpoints) -> None:
    """Until the catalogue's subscription has reached the broker (PUB/SUB joins late): a worker
    event, published until one pokes a refresh (a new report) well before the periodic one.
    Twice: the first new report may be the start's own refresh."""
    assert endpoints.events_in
    publisher = Publisher(endpoints.events_in)
    try:
        for _ in range(2):
            before = catalog.services
            started = time.monotonic()
            while catalog.services is before:
                assert time.monotonic() - started < FAST, "no event reached the catalogue"
                publisher.publish("worker.probe.ready", {})
                await asyncio.sleep(0.01)
    finally:
        publisher.close()


async def test_the_catalogue_follows_worker_events(broker: Broker, endpoints: Endpoints) -> None:
    assert catalog_module.REFRESH_INTERVAL >= 2 * FAST
    renewed: list[set[str]] = []
    async with BusClient(endpoints.requests) as client:
        catalog = Catalog(client, ["fs"])
        catalog.add_worker_listener(renewed.append)
        catalog.start(endpoints.events_out)
        await catalog.refresh()
        await _subscribed(catalog, endpoints)
        try:
            meta = {"server": "fs", "tools": [{"name": "read"}], "pid": 1, "session": "s1"}
            worker = BusWorker(endpoints.requests, "upstream.fs", _noop, meta=meta)
            task = asyncio.create_task(worker.run())
            await _until(lambda: catalog.servers["fs"].up, FAST)
            assert set(catalog.servers["fs"].tools) == {"read"}
            assert renewed == [{"fs"}]  # a worker joined

            worker.update_meta(
                {**meta, "tools": [{"name": "read"}, {"name": "write"}], "session": "s2"}
            )
            await _until(lambda: set(catalog.servers["fs"].tools) == {"read", "write"}, FAST)
            assert renewed == [{"fs"}] * 2  # a new upstream session: subscriptions are renewed

            worker.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await _until(lambda: not catalog.servers["fs"].up, FAST)
            assert renewed == [{"fs"}] * 3
        finally:
            await catalog.stop()
