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
from typing import Any, Self

import zmq

from bus import frames
from bus.endpoints import CurveClient
from bus.errors import BusError, bad_request, received, timed_out, unavailable
from bus.json_values import refusal
from bus.transport import DISCONNECTED, HANDSHAKE_FAILED, AsyncDealer, RefusedHandshakes

log = logging.getLogger(__name__)

PartialHandler = Callable[[Any], None]
_GRACE = 0.25  # local deadline slack, so the broker's TIMEOUT (which names the service) wins
_CONNECT_WAIT = 1.0  # how long a request may wait for the broker connection to come up
# The message of the UNAVAILABLE error for requests sent over a connection that then dropped:
# unlike other failures, such a request may or may not have reached its worker.
CONNECTION_LOST = "broker connection lost"


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[Reply]
    on_partial: PartialHandler | None
    service: str
    connection: int = -1  # the broker connection it was sent over (-1: not sent yet)


@dataclass(slots=True)
class Reply:
    """A REPLY: its body, and the meta forwarding workers added on the way (PROTOCOL.md,
    FORWARD)."""

    body: Any
    meta: dict[str, Any]


class BusClient:
    def __init__(
        self,
        endpoint: str,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        curve: CurveClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self.curve = curve
        self._connection = 0  # +1 each time the broker connection drops
        self._refused = RefusedHandshakes(log)
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
        self._fail_all(unavailable("bus client closed"))
        if self._dealer is not None:
            self._dealer.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self) -> None:
        if self._dealer is not None:
            self._dealer.close()
        # IMMEDIATE: never queue a request towards an absent broker (a late tool call is worse).
        self._dealer = AsyncDealer(
            self.ctx,
            self.endpoint,
            self._on_message,
            immediate=True,
            on_event=self._on_event,
            curve=self.curve,
        )
        self._last_heard = time.monotonic()

    def _on_event(self, event: int, value: int) -> None:
        if event == DISCONNECTED:
            # The broker died or the connection reset: what was sent over it is lost (a new
            # connection is a new peer to the broker, its answers cannot reach us). Fail it now
            # rather than at its deadline; whether it reached a worker is unknown.
            lost = self._connection
            self._connection += 1
            self._fail_sent_over(lost, unavailable(CONNECTION_LOST))
        elif event in HANDSHAKE_FAILED:
            self._refused(event, self.endpoint)

    async def request(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Any:
        """Send `body` to `service`; return the reply's decoded body or raise BusError."""
        return (
            await self.exchange(service, body, timeout=timeout, key=key, on_partial=on_partial)
        ).body

    async def exchange(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Reply:
        """Send `body` to `service`; return the `Reply` (body and meta) or raise BusError (its
        `meta` set by forwarding workers, if any)."""
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        header: dict[str, Any] = {"s": service, "id": rid, "t": max(1, int(timeout * 1000))}
        if key is not None:
            header["k"] = key
        self._calls[rid] = _Call(future, on_partial, service)
        timer = loop.call_later(timeout + _GRACE, self._expire, rid)
        try:
            msg = [frames.PROTOCOL, frames.REQUEST, frames.pack(header), _packed(service, body)]
            if not self._try_send(msg, self._calls[rid]):
                await self._send_when_connected(msg, min(timeout, _CONNECT_WAIT), self._calls[rid])
            return await future
        except asyncio.CancelledError:
            if rid in self._calls:
                self._send_quietly([frames.PROTOCOL, frames.CANCEL, frames.pack({"id": rid})])
            raise
        finally:
            timer.cancel()
            self._calls.pop(rid, None)

    def _try_send(self, msg: list[bytes], call: _Call | None = None) -> bool:
        """Send now if the broker is connected; False if not (IMMEDIATE: nothing was queued)."""
        dealer = self._dealer
        if dealer is None:
            return False
        if call is None:
            return dealer.send(msg)
        dealer.poll_events()  # a drop already noticed must not be blamed on this request
        connection = self._connection
        if not dealer.send(msg):
            return False
        call.connection = connection
        return True

    async def _send_when_connected(self, msg: list[bytes], wait: float, call: _Call) -> None:
        # Just after start or a broker restart the connection may still be handshaking.
        end = time.monotonic() + wait
        while time.monotonic() < end:
            await asyncio.sleep(0.005)
            if call.future.done():
                return  # failed meanwhile (closed)
            if self._try_send(msg, call):
                return
        raise unavailable("broker unavailable")

    def _send_quietly(self, msg: list[bytes]) -> None:
        self._try_send(msg)

    def _expire(self, rid: int) -> None:
        call = self._calls.pop(rid, None)
        if call is not None and not call.future.done():
            call.future.set_exception(timed_out(f"{call.service}: deadline exceeded"))
            self._send_quietly([frames.PROTOCOL, frames.CANCEL, frames.pack({"id": rid})])

    def answer(self, rid: int, body: Any) -> None:
        """Answer a question (PARTIAL `{"ask": ...}`) that the worker serving request `rid`
        asked."""
        self._try_send(
            [frames.PROTOCOL, frames.ANSWER, frames.pack({"id": rid}), frames.pack(body)]
        )

    def _fail_all(self, error: BusError) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(error)

    def _fail(self, rids: list[int], error: BusError) -> None:
        for rid in rids:
            call = self._calls.pop(rid, None)
            if call is not None and not call.future.done():
                call.future.set_exception(error)

    def _fail_sent_over(self, connection: int, error: BusError) -> None:
        for rid, call in list(self._calls.items()):
            if 0 <= call.connection <= connection:
                del self._calls[rid]
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
            partial = frames.unpack(msg[3])
            if isinstance(partial, dict) and isinstance(partial.get("ask"), dict):
                # The worker asks the caller something (e.g. sampling): route the answer back.
                partial["ask"]["bus_id"] = header["id"]
                if call.on_partial is None:
                    self.answer(
                        header["id"],
                        {
                            "id": partial["ask"].get("id"),
                            "error": {
                                "code": -32601,
                                "message": "the caller cannot answer "
                                f"{partial['ask'].get('method')} requests",
                            },
                        },
                    )
                    return
            if call.on_partial is not None:
                call.on_partial(partial)
            return
        del self._calls[header["id"]]
        if call.future.done():
            return
        if command == frames.REPLY:
            body = frames.unpack(msg[3])
            call.future.set_result(Reply(body, header.get("m") or {}))
        elif command == frames.ERROR:
            call.future.set_exception(
                received(int(header["code"]), str(header["msg"]), header.get("m"))
            )

    async def _heartbeat(self) -> None:
        interval = frames.HEARTBEAT_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self._send_quietly([frames.PROTOCOL, frames.HEARTBEAT, frames.EMPTY_HEADER])
            if time.monotonic() - self._last_heard > interval * frames.LIVENESS:
                # Only requests that reached a broker connection are lost with it; the others
                # (a broker not up yet: a cold start) keep waiting for one until their deadline.
                sent = [rid for rid, call in self._calls.items() if call.connection >= 0]
                if sent:
                    log.warning("broker silent: failing %d in-flight requests", len(sent))
                    self._fail(sent, unavailable("broker unavailable"))
                self._connect()


def _packed(service: str, body: Any) -> bytes:
    """The body as msgpack, or the caller's BusError(400) naming what the bus cannot carry
    (front-ends refuse such values first, bus/json_values.py; this is the net under them)."""
    try:
        return frames.pack(body)
    except (ValueError, TypeError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        why = refusal(body, "body") or f"{type(exc).__name__}: {exc}"
        raise bad_request(f"{service}: cannot send this request on the bus: {why}") from None
