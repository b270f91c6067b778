"""The catalogue stops when asked, even when a worker event pokes it at that very moment (as
workers come and go while a gateway stops). Python 3.11's `asyncio.wait_for` returned the poke
and swallowed the cancel: the refresh loop ran on, the gateway's shutdown waited for it, and
supervisord killed the gateway stopwaitsecs (10 s) later."""

from __future__ import annotations

import asyncio

from gateway.catalog import Catalog
from tests.gateway.fakes import FakeBus


async def test_a_poke_as_it_stops_does_not_keep_the_catalogue_running() -> None:
    bus = FakeBus()  # a broker that knows no services
    catalog = Catalog(bus, ["fs"])
    catalog.start()
    async with asyncio.timeout(5):
        while not bus.sent:  # its first refresh: it now waits for a poke or the interval
            await asyncio.sleep(0.001)
    catalog._poke.set()  # a worker event...
    async with asyncio.timeout(2):
        await catalog.stop()  # ...as the gateway stops
