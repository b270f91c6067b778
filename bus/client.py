"""Async client helper: send requests to services through the broker, await their replies.

One DEALER socket per process, shared by all concurrent requests (multiplexed by correlation id).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from bus import frames
from bus.errors import BusError
from bus.transport import AsyncDealer

log = logging.getLogger(__name__)

PartialHandler = Callable[[Any], None]
_GRACE = 0.25  # local deadline slack, so the broker's TIMEOUT (which names the service) wins
_CONNECT_WAIT = 1.0  # how long a request may wait for the broker connection to come up


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[Any]
    on_partial: PartialHandler | None
    service: str


class BusClient:
    def __init__(self, endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._dealer: AsyncDealer | None = None
        self._heartbeater: asyncio.Task[None] | None = None
        self._last_heard = time.monotonic()

    async def start(self) -> None:
        self._connect()
        self._heartbeater = asyncio.create_task(self._heartbeat())

    async def close(self) -> None:
        if self._heartbeater is not None:
            self._heartbeater.cancel()
            await asyncio.gather(self._heartbeater, return_exceptions=True)
        self._fail_all(BusError(frames.UNAVAILABLE, "bus client closed"))
        if self._dealer is not None:
            self._dealer.close()

    async def __aenter__(self) -> BusClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self) -> None:
        if self._dealer is not None:
            self._dealer.close()
        # IMMEDIATE: never queue a request towards an absent broker (a late tool call is worse).
        self._dealer = AsyncDealer(self.ctx, self.endpoint, self._on_message, immediate=True)
        self._last_heard = time.monotonic()

    async def request(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Any:
        """Send `body` to `service`; return the decoded reply or raise BusError."""
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        header: dict[str, Any] = {"s": service, "id": rid, "t": max(1, int(timeout * 1000))}
        if key is not None:
            header["k"] = key
        self._calls[rid] = _Call(future, on_partial, service)
        timer = loop.call_later(timeout + _GRACE, self._expire, rid)
        try:
            msg = [frames.PROTOCOL, frames.REQUEST, frames.pack(header), frames.pack(body)]
            if not self._try_send(msg):
                await self._send_when_connected(msg, min(timeout, _CONNECT_WAIT))
            return await future
        except asyncio.CancelledError:
            if rid in self._calls:
                self._send_quietly([frames.PROTOCOL, frames.CANCEL, frames.pack({"id": rid})])
            raise
        finally:
            timer.cancel()
            self._calls.pop(rid, None)

    def _try_send(self, msg: list[bytes]) -> bool:
        """Send now if the broker is connected; False if not (IMMEDIATE: nothing was queued)."""
        return self._dealer is not None and self._dealer.send(msg)

    async def _send_when_connected(self, msg: list[bytes], wait: float) -> None:
        # Just after start or a broker restart the connection may still be handshaking.
        end = time.monotonic() + wait
        while time.monotonic() < end:
            await asyncio.sleep(0.005)
            if self._try_send(msg):
                return
        raise BusError(frames.UNAVAILABLE, "broker unavailable")

    def _send_quietly(self, msg: list[bytes]) -> None:
        self._try_send(msg)

    def _expire(self, rid: int) -> None:
        call = self._calls.pop(rid, None)
        if call is not None and not call.future.done():
            call.future.set_exception(BusError(frames.TIMEOUT, f"{call.service}: deadline exceeded"))
            self._send_quietly([frames.PROTOCOL, frames.CANCEL, frames.pack({"id": rid})])

    def _fail_all(self, error: BusError) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(error)

    def _on_message(self, msg: list[bytes]) -> None:
        self._last_heard = time.monotonic()
        if len(msg) < 3 or msg[0] != frames.PROTOCOL:
            return
        command = msg[1]
        if command == frames.HEARTBEAT:
            return
        header = frames.unpack(msg[2])
        call = self._calls.get(header["id"])
        if call is None:
            return  # late answer to a request we gave up on
        if command == frames.PARTIAL:
            if call.on_partial is not None:
                call.on_partial(frames.unpack(msg[3]))
            return
        del self._calls[header["id"]]
        if call.future.done():
            return
        if command == frames.REPLY:
            call.future.set_result(frames.unpack(msg[3]))
        elif command == frames.ERROR:
            call.future.set_exception(BusError(int(header["code"]), str(header["msg"])))

    async def _heartbeat(self) -> None:
        interval = frames.HEARTBEAT_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self._send_quietly([frames.PROTOCOL, frames.HEARTBEAT, frames.EMPTY_HEADER])
            if time.monotonic() - self._last_heard > interval * frames.LIVENESS:
                if self._calls:
                    log.warning("broker silent: failing %d in-flight requests", len(self._calls))
                    self._fail_all(BusError(frames.UNAVAILABLE, "broker unavailable"))
                self._connect()
