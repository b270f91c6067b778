"""The catalogue stops when asked, even when a worker event pokes it at that very moment (as
workers come and go while a gateway stops). Python 3.11's `asyncio.wait_for` returned the poke
and swallowed the cancel: the refresh loop ran on, the gateway's shutdown waited for it, and
supervisord killed the gateway stopwaitsecs (10 s) later."""

from __future__ import annotations

import asyncio
from typing import Any

from bus.client import BusClient, PartialHandler, Reply
from gateway.catalog import Catalog


class _Bus(BusClient):
    """A bus whose broker knows no services (never connected: answered here)."""

    def __init__(self) -> None:
        super().__init__("inproc://catalog-stop-test")
        self.asked = 0

    async def exchange(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Reply:
        self.asked += 1
        return Reply({}, {})


async def test_a_poke_as_it_stops_does_not_keep_the_catalogue_running() -> None:
    bus = _Bus()
    catalog = Catalog(bus, ["fs"])
    catalog.start()
    async with asyncio.timeout(5):
        while not bus.asked:  # its first refresh: it now waits for a poke or the interval
            await asyncio.sleep(0.001)
    catalog._poke.set()  # a worker event...
    async with asyncio.timeout(2):
        await catalog.stop()  # ...as the gateway stops
