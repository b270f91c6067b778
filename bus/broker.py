"""The broker process: owns the ROUTER socket (requests) and the XSUB/XPUB pair (events).

Routing decisions are made by `bus.routing.Router` on plain data; this module only moves frames.
The broker waits on nothing but its own sockets, so it runs one plain `zmq.Poller` loop: faster
than asyncio for a pure switch, and free of edge-triggered wakeup pitfalls.
"""

from __future__ import annotations

import logging
import time

import zmq

from bus import frames
from bus.endpoints import Endpoints
from bus.routing import Router

log = logging.getLogger(__name__)

TICK = 0.05  # deadline resolution, seconds
# Plain ints: pyzmq's flag enums cost more than the send itself on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


class Broker:
    def __init__(self, endpoints: Endpoints, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.endpoints = endpoints
        self.ctx = ctx or zmq.Context.instance()
        self.router = Router()
        self._socket = self.ctx.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._xsub = self.ctx.socket(zmq.XSUB)
        self._xsub.setsockopt(zmq.LINGER, 0)
        self._xpub = self.ctx.socket(zmq.XPUB)
        self._xpub.setsockopt(zmq.LINGER, 0)
        self._xpub.setsockopt(zmq.SNDHWM, 100_000)
        self._running = True

    def bind(self) -> None:
        self._socket.bind(self.endpoints.requests)
        self._xsub.bind(self.endpoints.events_in)
        self._xpub.bind(self.endpoints.events_out)
        log.info("broker listening on %s", self.endpoints.requests)

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self.bind()
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._xsub, zmq.POLLIN)
        poller.register(self._xpub, zmq.POLLIN)
        router = self.router
        next_tick = time.monotonic() + TICK
        next_heartbeat = time.monotonic() + frames.HEARTBEAT_INTERVAL
        while self._running:
            timeout_ms = max(0, int((next_tick - time.monotonic()) * 1000))
            ready = dict(poller.poll(timeout_ms))
            now = time.monotonic()
            if self._socket in ready:
                # Drain everything queued before flushing: fewer wakeups under load.
                sock = self._socket
                for _ in range(1000):
                    try:
                        identity = sock.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    msg = []
                    while sock.getsockopt(_RCVMORE):
                        msg.append(sock.recv(_NOBLOCK))
                    router.on_message(identity, msg, now)
            if self._xsub in ready:
                self._forward(self._xsub, self._xpub)
            if self._xpub in ready:
                self._forward(self._xpub, self._xsub)  # subscriptions flow upstream
            if now >= next_tick:
                router.tick(now)
                next_tick = now + TICK
                if now >= next_heartbeat:
                    router.heartbeat()
                    next_heartbeat = now + frames.HEARTBEAT_INTERVAL
            self._flush()
        self._socket.close(0)
        self._xsub.close(0)
        self._xpub.close(0)

    @staticmethod
    def _forward(src: zmq.Socket[bytes], dst: zmq.Socket[bytes]) -> None:
        for _ in range(1000):
            try:
                msg = src.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                dst.send_multipart(msg, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # slow subscriber: events are best effort (PROTOCOL.md)

    def _flush(self) -> None:
        router = self.router
        sock = self._socket
        for msg in router.outbox:
            try:
                for frame in msg[:-1]:
                    sock.send(frame, _SNDMORE_NOBLOCK)
                sock.send(msg[-1], _NOBLOCK)
            except zmq.ZMQError as exc:  # peer gone: drop, the peer's own deadline covers it
                log.debug("drop message to %r: %s", msg[0], exc)
        router.outbox.clear()
        for topic, body in router.events:
            try:
                self._xpub.send_multipart([topic.encode(), frames.pack(body)], flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        router.events.clear()
