"""The broker process: owns the ROUTER socket (requests) and the XSUB/XPUB pair (events). Events
reach XPUB from XSUB (local publishers), from the routing state (its own) and as workers' EVENTs
on the ROUTER sockets (the way in for workers on other hosts).

Routing decisions are made by `bus.routing.Router` on plain data; this module only moves frames.
The broker waits on nothing but its own sockets, so it runs one plain loop, faster than asyncio for
a pure switch: epoll on the sockets' ZMQ_FDs, and ZMQ_EVENTS asked of a socket only when its
FD signalled or after a send on it (ZMQ_FD is edge-triggered: see `run`).

Workers on other hosts reach it on a second ROUTER socket, bound on tcp with CURVE: only clients
whose public key is in the authorised directory get through the handshake (ZAP, in a thread of
this process). Both sockets feed the one `Router`; identities from the remote socket carry a
one-byte prefix so the two sockets' generated identities can never collide.
"""

from __future__ import annotations

import logging
import select
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from bus import frames, multipart
from bus.endpoints import ZAP_DOMAIN, AuthorizedKeys, CurveServer, Endpoints
from bus.routing import Router

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

TICK = 0.05  # deadline resolution, seconds
# Plain ints: pyzmq's flag enums cost more than the send itself on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_recv_frame = multipart.recv_frame
_SRCFD = int(zmq.SRCFD)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
# libzmq's generated identities start with a zero byte; the remote socket's get this in front.
REMOTE = b"\x01"


class Broker:
    def __init__(
        self,
        endpoints: Endpoints,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        remote: str | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        """`remote`: a tcp endpoint to serve too, for workers on other hosts; it needs `curve`
        (the broker's keypair and the directory of authorised client keys)."""
        if remote is not None and curve is None:
            raise ValueError(
                f"broker: {remote} needs CURVE keys (never serve the bus on tcp in the clear)"
            )
        self.endpoints = endpoints
        self.ctx = ctx or zmq.Context.instance()
        self.router = Router()
        self._socket = self._router_socket()
        self.remote = remote
        self.curve = curve
        self._remote: zmq.Socket[bytes] | None = None
        self._monitors: list[zmq.Socket[bytes]] = []
        self._auth: ThreadAuthenticator | None = None
        if remote is not None and curve is not None:
            self._remote = self._router_socket()
            curve.apply(self._remote)
        self._xsub = self.ctx.socket(zmq.XSUB)
        self._xsub.setsockopt(zmq.LINGER, 0)
        self._xpub = self.ctx.socket(zmq.XPUB)
        self._xpub.setsockopt(zmq.LINGER, 0)
        self._xpub.setsockopt(zmq.SNDHWM, 100_000)
        self._running = True

    def _router_socket(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        return sock

    def bind(self) -> None:
        self._socket.bind(self.endpoints.requests)
        assert self.endpoints.events_in and self.endpoints.events_out, (
            "the broker's events are local (ipc)"
        )
        self._xsub.bind(self.endpoints.events_in)
        self._xpub.bind(self.endpoints.events_out)
        log.info("broker listening on %s", self.endpoints.requests)
        if self._remote is not None and self.curve is not None and self.remote is not None:
            # The ZAP handler must run before the first tcp peer can connect. Imported here: it
            # brings asyncio, which a broker serving ipc only does without (~8 MB).
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("bus.broker.zap"))
            self._auth.start()
            keys = _LoggedKeys(self.curve.authorized)
            self._auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=keys)
            self._remote.bind(self.remote)
            log.info(
                "broker listening on %s (CURVE; %d authorised keys in %s)",
                self.remote,
                len(keys.keys()),
                self.curve.authorized,
            )

    @property
    def remote_endpoint(self) -> str | None:
        """The tcp endpoint actually bound (resolves a port 0 or `*` to what the OS chose)."""
        if self._remote is None:
            return None
        return str(self._remote.getsockopt_string(zmq.LAST_ENDPOINT))

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self.bind()
        # Connection monitors: a peer process that dies closes its connection at once, long
        # before it misses its heartbeats; its requests are failed then (PROTOCOL.md).
        monitors = [sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) for sock in self._routers()]
        self._monitors = monitors
        # Sleep in epoll on the sockets' ZMQ_FDs, then look at the ones that signalled (and the
        # routers, always). Before sleeping again, ask ZMQ_EVENTS of the sockets sent on: a send
        # can take in the signal of a message that arrived meanwhile. (zmq.Poller asked every
        # socket's ZMQ_EVENTS twice per wakeup, two system calls each.)
        watched = {
            int(sock.getsockopt(zmq.FD)): sock
            for sock in (*self._routers(), *monitors, self._xsub, self._xpub)
        }
        epoll = select.epoll()
        for fd in watched:
            epoll.register(fd, select.EPOLLIN)
        router = self.router
        next_tick = time.monotonic() + TICK
        next_heartbeat = time.monotonic() + frames.HEARTBEAT_INTERVAL
        woken = set(watched.values())  # the first time round: everything
        while self._running:
            if not woken:
                timeout = max(0.0, next_tick - time.monotonic())
                woken = {watched[fd] for fd, _ in epoll.poll(timeout)}
            now = time.monotonic()
            # What peers sent before a connection closed is read before the close is applied:
            # a worker's last answers reach their callers instead of a "worker died".
            self._receive(self._socket, b"", now)
            if self._remote is not None:
                self._receive(self._remote, REMOTE, now)
            if any(m in woken for m in monitors):
                self._poll_monitors(now)
            events = self._xsub in woken or self._xpub in woken
            if self._xsub in woken:
                self._forward(self._xsub, self._xpub)
            if self._xpub in woken:
                self._forward(self._xpub, self._xsub)  # subscriptions flow upstream
            if now >= next_tick:
                router.tick(now)
                next_tick = now + TICK
                if now >= next_heartbeat:
                    router.heartbeat()
                    next_heartbeat = now + frames.HEARTBEAT_INTERVAL
            events = events or bool(router.events)
            self._flush()
            woken = {sock for sock in self._routers() if _readable(sock)}
            if events:
                woken.update(sock for sock in (self._xsub, self._xpub) if _readable(sock))
        epoll.close()
        for sock in self._routers():
            sock.disable_monitor()
        for sock in (*monitors, *self._routers(), self._xsub, self._xpub):
            sock.close(0)
        if self._auth is not None:
            self._auth.stop()

    def _routers(self) -> tuple[zmq.Socket[bytes], ...]:
        return (self._socket,) if self._remote is None else (self._socket, self._remote)

    def _receive(self, sock: zmq.Socket[bytes], prefix: bytes, now: float) -> None:
        """Drain everything queued before flushing: fewer wakeups under load."""
        router = self.router
        for _ in range(1000):
            try:
                frame = _recv_frame(sock)
            except zmq.Again:
                return
            identity = frame.bytes
            msg: list[bytes] = []
            fd = -1
            while frame.more:
                frame = _recv_frame(sock)
                msg.append(frame.bytes)
                if len(msg) == 3 and msg[1] == frames.READY:
                    # Which connection a worker registers on (the kernel's fd), so that its
                    # connection closing can be told apart from a peer's. Only READY asks.
                    fd = int(frame.get(_SRCFD))
            if fd >= 0:
                # A disconnect of an earlier holder of this fd number is already queued on the
                # monitor (libzmq reports it before closing the fd): apply it first.
                self._poll_monitors(now)
                router.on_message(prefix + identity, msg, now)
                router.worker_connection(prefix + identity, fd)
            else:
                router.on_message(prefix + identity, msg, now)

    def _poll_monitors(self, now: float) -> None:
        for monitor in self._monitors:
            while True:
                try:
                    event = monitor.recv_multipart(_NOBLOCK)
                except zmq.Again:
                    break
                if len(event) == 2 and len(event[0]) == 6:
                    kind, fd = struct.unpack("=hi", event[0])
                    if kind == _DISCONNECTED and not self.router.connection_lost(fd, now):
                        log.info("bus client disconnected (fd %d)", fd)

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
        local, remote = self._socket, self._remote
        for msg in router.outbox:
            sock = local
            if remote is not None and msg[0][:1] == REMOTE:
                sock = remote
                msg[0] = msg[0][1:]
            try:
                multipart.send(sock, msg)
            except zmq.ZMQError as exc:  # peer gone: drop, the peer's own deadline covers it
                log.debug("drop message to %r: %s", msg[0], exc)
        router.outbox.clear()
        for topic, body in router.events:
            packed = body if isinstance(body, bytes) else frames.pack(body)
            try:
                self._xpub.send_multipart([topic.encode(), packed], flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        router.events.clear()


def _readable(sock: zmq.Socket[bytes]) -> bool:
    return bool(sock.getsockopt(_EVENTS) & _POLLIN)  # type: ignore[operator]


class _LoggedKeys(AuthorizedKeys):
    """The authorised keys, saying (once per key) which peers were refused."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = super().callback(domain, key)
        if not allowed and key not in self._refused and len(self._refused) < 1000:
            self._refused.add(key)
            log.warning(
                "refused a tcp peer: public key %s is not in %s", key.decode(), self.directory
            )
        return allowed
