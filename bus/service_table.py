"""The broker's table of services (plain data, as bus/routing.py's `Router` keeps it): each
service's live workers and its queue of requests waiting for one, and the requests in flight;
which worker takes a request; and the table as the broker's own service `mmi.services` reports
it (what front-ends read: workers, their load and meta, what is queued).

A request with a key (the agent id) goes to the same worker whatever the load (rendezvous
hashing over slot names: deterministic across broker restarts, so a policy worker keeps an
agent's rate-limit window); one without waits for the least loaded worker with room, the
longest idle first.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

Key = tuple[bytes, int]  # (client identity, correlation id)


@dataclass(eq=False)
class Worker:
    identity: bytes
    service: str
    slot: str
    capacity: int
    meta: Any
    expiry: float
    idle_since: float
    inflight: set[Key] = field(default_factory=set)
    served: int = 0
    fd: int = -1  # the broker's connection to it (kernel fd), when known
    refused_event: bool = False  # it published a topic it may not (logged once)

    def load(self) -> float:
        return len(self.inflight) / self.capacity


@dataclass(eq=False)
class Pending:
    client: bytes
    id: int
    service: str
    deadline: float
    key: str | None
    body: bytes
    worker: Worker | None = None
    meta: dict[str, Any] | None = (
        None  # added by workers that forwarded it; sent with the final answer
    )


@dataclass(eq=False)
class Service:
    name: str
    workers: dict[bytes, Worker] = field(default_factory=dict)
    queue: deque[Pending] = field(default_factory=deque)


def affine_worker(service: Service, key: str) -> Worker:
    """The worker of `service` that takes every request with `key` (it has at least one)."""
    encoded = key.encode()
    return max(
        service.workers.values(), key=lambda w: zlib.crc32(w.slot.encode() + b"\0" + encoded)
    )


def least_loaded(service: Service) -> Worker | None:
    """The worker with room that takes the next queued request (None: all are full)."""
    free = [w for w in service.workers.values() if len(w.inflight) < w.capacity]
    return min(free, key=lambda w: (w.load(), w.idle_since)) if free else None


def report(services: dict[str, Service]) -> dict[str, Any]:
    """`mmi.services`: per service, what is queued and each worker's slot, load and meta."""
    return {
        s.name: {
            "queued": len(s.queue),
            "workers": [
                {
                    "slot": w.slot,
                    "capacity": w.capacity,
                    "inflight": len(w.inflight),
                    "served": w.served,
                    "meta": w.meta,
                }
                for w in s.workers.values()
            ],
        }
        for s in services.values()
    }
