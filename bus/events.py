"""Event fan-out helpers: publish to the broker's XSUB, subscribe at its XPUB (PROTOCOL.md, Events).

Events are best effort (PUB/SUB); what must not be lost travels as an acknowledged request.
Topics are `<kind>.<name>.<event>`, bodies msgpack maps. Which topics a worker may publish
through the broker (EVENT) is decided here too (`worker_may_publish`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import zmq

from bus import frames

if TYPE_CHECKING:
    from zmq.asyncio import Context as AsyncContext


def worker_may_publish(service: str, topic: str) -> bool:
    """Whether a worker of `service` may publish `topic` (EVENT): a worker of `upstream.<name>`
    publishes `resource.<name>.<event>`, one of `upstream-state.<name>` its lifecycle
    `upstream.<name>.<state>`, and nothing else. Subscribers trust `worker.*` (the broker's) and
    `trace.*` (the trace writer's) events, and a remote worker must not forge those nor speak
    for another server."""
    if service.startswith(frames.UPSTREAM_STATE_PREFIX):
        server = service.removeprefix(frames.UPSTREAM_STATE_PREFIX)
        prefix = f"{frames.UPSTREAM_PREFIX}{server}."
        return topic.startswith(prefix) and "." not in topic[len(prefix) :] and topic != prefix
    server = service.removeprefix(frames.UPSTREAM_PREFIX)
    prefix = f"resource.{server}."
    return server != service and topic.startswith(prefix) and len(topic) > len(prefix)


class Publisher:
    def __init__(self, endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        # A plain socket: a PUB send never blocks (NOBLOCK, dropped when nobody keeps up), and
        # the asyncio wrapper would cost more than the send itself.
        self._sock: zmq.Socket[bytes] = (ctx or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        try:
            self._sock.send_multipart([topic.encode(), frames.pack(body)], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # nobody keeping up: best effort by design

    def close(self) -> None:
        self._sock.close(0)


class Subscriber:
    def __init__(self, endpoint: str, *prefixes: str, ctx: AsyncContext | None = None) -> None:
        from zmq.asyncio import Context  # here: the broker imports this module, runs no asyncio

        self._sock = (ctx or Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        for prefix in prefixes or ("",):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self._sock.connect(endpoint)

    async def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            msg = await self._sock.recv_multipart()
            if len(msg) != 2:
                continue  # not ours: drop
            try:
                yield msg[0].decode(), frames.unpack(msg[1])
            except (UnicodeDecodeError, ValueError, TypeError):  # (msgpack raises all three)
                continue

    def close(self) -> None:
        self._sock.close(0)
