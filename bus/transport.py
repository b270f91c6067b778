"""One DEALER socket driven by the asyncio loop, with callbacks instead of futures.

pyzmq's zmq.asyncio allocates futures and poller registrations per message, which costs a
hundred microseconds and more per hop here. This wraps a plain socket instead: the loop watches
the socket's ZMQ_FD, and every wakeup drains all queued messages into `on_message`. ZMQ_FD is
edge-triggered and any socket operation can consume the edge, so after each send we re-check
ZMQ_EVENTS and drain if something is already waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
_RCVMORE = int(zmq.RCVMORE)

log = logging.getLogger(__name__)

MessageHandler = Callable[[list[bytes]], None]


class AsyncDealer:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        on_message: MessageHandler,
        *,
        immediate: bool = False,
    ) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue towards a peer that is not connected
        sock.connect(endpoint)
        self._sock = sock
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._drain_scheduled = False
        self.closed = False
        self._loop.call_soon(self._drain)

    def send(self, msg: list[bytes]) -> bool:
        """Send without blocking; False if it cannot go now (no connected peer)."""
        sock = self._sock
        try:
            for frame in msg[:-1]:
                sock.send(frame, _SNDMORE_NOBLOCK)
            sock.send(msg[-1], _NOBLOCK)
        except zmq.Again:
            return False
        finally:
            self._schedule_drain()
        return True

    def writable(self) -> bool:
        return bool(self._sock.getsockopt(_EVENTS) & _POLLOUT)

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and not self.closed:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self._sock
        while not self.closed and sock.getsockopt(_EVENTS) & _POLLIN:
            msg = [sock.recv(_NOBLOCK)]
            while sock.getsockopt(_RCVMORE):
                msg.append(sock.recv(_NOBLOCK))
            try:
                self._on_message(msg)
            except Exception:  # a bad message must not stop the drain (or the process)
                log.exception("dropping message that failed to process")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._fd)
            self._sock.close(0)
