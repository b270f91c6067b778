"""One DEALER socket driven by the asyncio loop, with callbacks instead of futures.

pyzmq's zmq.asyncio allocates futures and poller registrations per message, which costs a
hundred microseconds and more per hop here. This wraps a plain socket instead: the loop watches
the socket's ZMQ_FD, and every wakeup drains all queued messages into `on_message`. ZMQ_FD is
edge-triggered and any socket operation can consume the edge, so after each send we re-check
ZMQ_EVENTS and drain if something is already waiting.

Connection events (the broker connection dropped, a CURVE handshake refused) come from a
ZeroMQ socket monitor, watched the same way, and go to `on_event`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable

import zmq

from bus import multipart
from bus.endpoints import CurveClient, curve_for

_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)

DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
HANDSHAKE_FAILED = (
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL),
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
)
AUTH_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
CONNECTED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)  # connected and through the security handshake
_MONITORED = CONNECTED | DISCONNECTED | sum(HANDSHAKE_FAILED)

log = logging.getLogger(__name__)


class RefusedHandshakes:
    """Says a refused CURVE handshake on `logger`, at most once per EVERY seconds: ZeroMQ retries
    the connection, and each retry is refused again. One place for the client and the worker."""

    EVERY = 10.0

    def __init__(self, logger: logging.Logger, prefix: str = "") -> None:
        self.logger, self.prefix = logger, prefix
        self._last = -self.EVERY - 1.0

    def __call__(self, event: int, endpoint: str) -> None:
        now = time.monotonic()
        if now - self._last <= self.EVERY:
            return
        self._last = now
        why = "our key is not authorised" if event == AUTH_FAILED else "wrong keys or no CURVE"
        self.logger.error(
            "%sbroker at %s refused the CURVE handshake (%s)", self.prefix, endpoint, why
        )


MessageHandler = Callable[[list[bytes]], None]
EventHandler = Callable[[int, int], None]  # (event, value), zmq.EVENT_* numbers


class AsyncDealer:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        on_message: MessageHandler,
        *,
        immediate: bool = False,
        on_event: EventHandler | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue towards a peer that is not connected
        curve = curve or curve_for(endpoint)
        if curve is not None:
            curve.apply(sock)
        self._loop = asyncio.get_running_loop()
        self._on_event = on_event
        self._monitor: zmq.Socket[bytes] | None = None
        if on_event is not None:  # before connect(), so no event is missed
            self._monitor = sock.get_monitor_socket(_MONITORED)
            self._monitor_fd = int(self._monitor.getsockopt(zmq.FD))
            self._loop.add_reader(self._monitor_fd, self.poll_events)
        sock.connect(endpoint)
        self._sock = sock
        self._on_message = on_message
        self._fd = int(sock.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._drain)
        self._drain_scheduled = False
        self.closed = False
        self._loop.call_soon(self._drain)
        if self._monitor is not None:
            self._loop.call_soon(self.poll_events)  # ZMQ_FD is edge-triggered: look once first

    def send(self, msg: list[bytes]) -> bool:
        """Send without blocking; False if it cannot go now (no connected peer)."""
        try:
            multipart.send(self._sock, msg)
        except zmq.Again:
            return False
        finally:
            self._schedule_drain()
        return True

    def writable(self) -> bool:
        return bool(self._sock.getsockopt(_EVENTS) & _POLLOUT)  # type: ignore[operator]

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and not self.closed:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self._sock
        while not self.closed and sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
            msg = multipart.recv(sock)
            try:
                self._on_message(msg)
            except Exception:  # a bad message must not stop the drain (or the process)
                log.exception("dropping message that failed to process")

    def poll_events(self) -> None:
        """Deliver pending connection events now. Messages that arrived before a disconnect
        are delivered first, so `on_event(DISCONNECTED)` sees only what was really lost."""
        monitor = self._monitor
        while not self.closed and monitor is not None and monitor.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
            msg = monitor.recv_multipart(_NOBLOCK)
            if len(msg) != 2 or len(msg[0]) != 6:
                continue
            event, value = struct.unpack("=hi", msg[0])
            if event == DISCONNECTED:
                self._drain()
            assert self._on_event is not None
            try:
                self._on_event(event, value)
            except Exception:
                log.exception("connection event handler failed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._fd)
            if self._monitor is not None:
                self._loop.remove_reader(self._monitor_fd)
                self._sock.disable_monitor()
                self._monitor.close(0)
            self._sock.close(0)
