"""The broker's routing state machine on plain data: no sockets, so it is unit-testable.

`Router` takes decoded messages and clock ticks and fills `outbox` (multipart messages for the
ROUTER socket, identity first) and `events` (topic, body) for the broker to flush: the broker's own
events as maps, workers' EVENTs as the msgpack bytes they sent (checked, not re-encoded). The
table it keeps (services, workers, queues) and who takes a request: bus/service_table.py.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

from bus import frames
from bus.events import worker_may_publish
from bus.service_table import Key, Pending, Service, Worker, affine_worker, least_loaded, report

log = logging.getLogger(__name__)


Event = tuple[str, dict[str, Any] | bytes]  # (topic, body: a map, or a map already packed)
# An unknown worker is told DISCONNECT at most once in this window (its queued messages arrive
# after the first DISCONNECT but before its READY); after it, a worker still unknown is told again.
_TOLD_FOR = frames.HEARTBEAT_INTERVAL * frames.LIVENESS


class Router:
    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.pending: dict[Key, Pending] = {}
        self._deadlines: list[tuple[float, bytes, int]] = []
        self.outbox: list[list[bytes]] = []
        self.events: list[Event] = []
        self._told: dict[bytes, float] = {}  # unknown workers sent DISCONNECT, and when

    # -- input -------------------------------------------------------------------------------

    def on_message(self, identity: bytes, msg: list[bytes], now: float) -> None:
        """One multipart message from the ROUTER socket, identity frame removed."""
        if len(msg) < 3 or msg[0] != frames.PROTOCOL:
            log.warning("dropping malformed message from %r (%d frames)", identity, len(msg))
            return
        command = msg[1]
        try:
            header = frames.unpack(msg[2])
        except frames.UNDECODABLE:
            header = None
        if not isinstance(header, dict):
            log.warning("dropping message with undecodable header from %r", identity)
            return
        body = msg[3] if len(msg) > 3 else b""
        worker = self.workers.get(identity)
        if worker is not None:
            worker.expiry = now + frames.HEARTBEAT_INTERVAL * frames.LIVENESS
        try:
            self._dispatch_command(identity, worker, command, header, body, now)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning(
                "dropping bad %s from %r: %r", frames.COMMAND_NAMES.get(command), identity, exc
            )

    def _dispatch_command(
        self,
        identity: bytes,
        worker: Worker | None,
        command: bytes,
        header: dict[str, Any],
        body: bytes,
        now: float,
    ) -> None:
        if command == frames.REQUEST:
            self._client_request(identity, header, body, now)
        elif command == frames.CANCEL:
            self._client_cancel(identity, int(header["id"]), now)
        elif command == frames.ANSWER:  # the caller answers a question its request's worker asked
            pending = self.pending.get((identity, int(header["id"])))
            if pending is not None and pending.worker is not None:
                self._send(
                    pending.worker.identity,
                    frames.ANSWER,
                    frames.pack({"c": identity, "id": pending.id}),
                    body,
                )
        elif command == frames.HEARTBEAT:
            # A known worker's heartbeat has done its work already: any message renews its expiry.
            # A worker's heartbeat that we do not know: we restarted.
            if worker is None and "s" in header:
                self._forgotten(identity, now)
            elif worker is None:  # a client's heartbeat
                self._send(identity, frames.HEARTBEAT, frames.EMPTY_HEADER)
        elif command == frames.READY:
            self._worker_ready(identity, header, body, now)
        elif worker is None:
            if command != frames.DISCONNECT:  # (a worker leaving that we never knew: nothing to do)
                self._forgotten(identity, now)
        elif command in (frames.REPLY, frames.ERROR, frames.PARTIAL):
            self._worker_answer(worker, command, header, body, now)
        elif command == frames.FORWARD:
            self._worker_forward(worker, header, body, now)
        elif command == frames.EVENT:
            self._worker_event(worker, header, body)
        elif command == frames.UPDATE:
            worker.meta = frames.unpack(body) if body else None
            self.events.append((f"worker.{worker.service}.updated", {"slot": worker.slot}))
        elif command == frames.DISCONNECT:
            self._remove_worker(worker, "worker disconnected")
        else:
            log.warning("unknown command %r from %r", command, identity)

    def _forgotten(self, identity: bytes, now: float) -> None:
        """A worker we do not know (we restarted, or declared it dead): make it say READY again.

        Once per worker, however many of its messages were queued towards us: each DISCONNECT
        makes the worker send READY, and a second READY would fail the requests we gave it
        after the first one (PROTOCOL.md, READY from a known worker)."""
        told = self._told.get(identity)
        if told is not None and now - told < _TOLD_FOR:
            return
        self._told[identity] = now
        self._send(identity, frames.DISCONNECT, frames.EMPTY_HEADER)

    def worker_connection(self, identity: bytes, fd: int) -> None:
        """The connection (fd) a READY came in on, so its loss removes the worker at once."""
        worker = self.workers.get(identity)
        if worker is not None:
            worker.fd = fd

    def connection_lost(self, fd: int, now: float) -> bool:
        """A connection closed (the peer process died, or closed its socket): its workers are
        dead now, not after LIVENESS heartbeats. True if it was a worker's."""
        dead = [w for w in self.workers.values() if w.fd == fd]
        for worker in dead:
            self._remove_worker(worker, "worker died")
        return bool(dead)

    def tick(self, now: float) -> None:
        """Heartbeats, dead workers, passed deadlines. Call every HEARTBEAT_INTERVAL or sooner."""
        for worker in list(self.workers.values()):
            if worker.expiry < now:
                self._remove_worker(worker, "worker died")
        if self._told:
            self._told = {i: t for i, t in self._told.items() if now - t < _TOLD_FOR}
        self.expire(now)

    def heartbeat(self) -> None:
        for identity in self.workers:
            self._send(identity, frames.HEARTBEAT, frames.EMPTY_HEADER)

    def expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, client, rid = heapq.heappop(self._deadlines)
            pending = self.pending.pop((client, rid), None)
            if pending is None:
                continue
            self._fail(pending, frames.TIMEOUT, f"{pending.service}: deadline exceeded")
            if pending.worker is not None:
                self._release(pending.worker, (client, rid), now)
                self._send(
                    pending.worker.identity, frames.CANCEL, frames.pack({"c": client, "id": rid})
                )
            else:
                self._services_queue_remove(pending)

    # -- clients -----------------------------------------------------------------------------

    def _client_request(
        self, client: bytes, header: dict[str, Any], body: bytes, now: float
    ) -> None:
        rid = int(header["id"])
        service_name = str(header["s"])
        timeout_ms = int(header.get("t") or 0)
        if timeout_ms <= 0:
            self._error(client, rid, frames.BAD_REQUEST, "request without a positive timeout")
            return
        if service_name.startswith("mmi."):
            self._mmi(client, rid, service_name)
            return
        key = header.get("k")
        pending = Pending(
            client, rid, service_name, now + timeout_ms / 1000, key and str(key), body
        )
        self.pending[(client, rid)] = pending
        heapq.heappush(self._deadlines, (pending.deadline, client, rid))
        self._route(pending, now)

    def _route(self, pending: Pending, now: float) -> None:
        service = self.services.get(pending.service)
        if service is None or not service.workers:
            del self.pending[(pending.client, pending.id)]  # (its deadline entry is skipped later)
            self._fail(pending, frames.UNAVAILABLE, f"{pending.service}: no live worker")
        elif pending.key is not None:
            self._assign(affine_worker(service, pending.key), pending, now)
        else:
            service.queue.append(pending)
            self._drain(service, now)

    def _client_cancel(self, client: bytes, rid: int, now: float) -> None:
        pending = self.pending.pop((client, rid), None)
        if pending is None:
            return
        if pending.worker is not None:
            self._release(pending.worker, (client, rid), now)
            self._send(
                pending.worker.identity, frames.CANCEL, frames.pack({"c": client, "id": rid})
            )
        else:
            self._services_queue_remove(pending)
        self._error(client, rid, frames.CANCELLED, f"{pending.service}: cancelled by client")

    def _mmi(self, client: bytes, rid: int, name: str) -> None:
        if name != "mmi.services":
            self._error(client, rid, frames.NOT_FOUND, f"unknown broker service {name}")
            return
        self._send(
            client, frames.REPLY, frames.pack({"id": rid}), frames.pack(report(self.services))
        )

    # -- workers -----------------------------------------------------------------------------

    def _worker_ready(
        self, identity: bytes, header: dict[str, Any], body: bytes, now: float
    ) -> None:
        self._told.pop(identity, None)
        service_name = str(header["s"])
        capacity = max(1, int(header.get("n", 1)))
        slot = str(header.get("slot") or identity.hex())
        meta = frames.unpack(body) if body else None
        expiry = now + frames.HEARTBEAT_INTERVAL * frames.LIVENESS
        old = self.workers.get(identity)
        if old is not None and old.service == service_name:
            # Same connection, same service: a repeated READY (answer to a DISCONNECT that
            # crossed its first READY). Refresh; what it holds stays assigned to it.
            old.capacity, old.slot, old.meta, old.expiry = capacity, slot, meta, expiry
            self._drain(self.services[service_name], now)
            return
        if old is not None:
            self._remove_worker(old, f"worker now serves {service_name}")
        worker = Worker(identity, service_name, slot, capacity, meta, expiry, now)
        service = self.services.setdefault(service_name, Service(service_name))
        service.workers[identity] = worker
        self.workers[identity] = worker
        self.events.append((f"worker.{service_name}.ready", {"slot": slot, "capacity": capacity}))
        self._drain(service, now)

    def _held(self, worker: Worker, header: dict[str, Any]) -> Pending | None:
        """The request `(c, id)` of a worker's answer or forward, if that worker still holds it
        (None: late — timed out, cancelled, or from before a restart)."""
        pending = self.pending.get((bytes(header["c"]), int(header["id"])))
        return pending if pending is not None and pending.worker is worker else None

    def _worker_answer(
        self, worker: Worker, command: bytes, header: dict[str, Any], body: bytes, now: float
    ) -> None:
        if (pending := self._held(worker, header)) is None:
            return
        key: Key = (pending.client, pending.id)
        out: dict[str, Any] = {"id": key[1]}
        if command == frames.ERROR:
            out["code"], out["msg"] = (
                int(header.get("code", frames.INTERNAL)),
                str(header.get("msg", "")),
            )
        if command != frames.PARTIAL:
            # What forwarding workers added, and what the answering worker adds (its `m`).
            meta = header.get("m")
            if isinstance(meta, dict):
                out["m"] = {**(pending.meta or {}), **meta}
            elif pending.meta:
                out["m"] = pending.meta
        self._send(key[0], command, frames.pack(out), body)
        if command != frames.PARTIAL:
            del self.pending[key]
            worker.served += 1
            self._release(worker, key, now)

    def _worker_forward(
        self, worker: Worker, header: dict[str, Any], body: bytes, now: float
    ) -> None:
        """The worker hands its request on to another service (e.g. policy → upstream once the
        call is allowed): same client, id and deadline; the caller's answer comes from the next
        worker."""
        if (pending := self._held(worker, header)) is None:
            return
        worker.served += 1
        pending.worker = None
        self._release(worker, (pending.client, pending.id), now)
        pending.service = str(header["s"])
        pending.key = str(header["k"]) if header.get("k") is not None else None
        pending.body = body
        meta = header.get("m")
        if isinstance(meta, dict):
            pending.meta = {**(pending.meta or {}), **meta}
        self._route(pending, now)

    def _worker_event(self, worker: Worker, header: dict[str, Any], body: bytes) -> None:
        """Republished as if it came in on XSUB, so workers on other hosts (no XSUB there) publish
        too. Only topics the worker may publish; only map bodies (what subscribers expect)."""
        topic = str(header["topic"])
        if not worker_may_publish(worker.service, topic):
            if not worker.refused_event:
                worker.refused_event = True
                log.warning(
                    "%s %s may not publish %r: dropped (and any more such events from it)",
                    worker.service,
                    worker.slot,
                    topic,
                )
            return
        if not isinstance(frames.unpack(body), dict):
            raise TypeError("event body is not a msgpack map")
        self.events.append((topic, body))

    def _remove_worker(self, worker: Worker, reason: str) -> None:
        self.workers.pop(worker.identity, None)
        service = self.services[worker.service]
        service.workers.pop(worker.identity, None)
        for key in worker.inflight:
            if (pending := self.pending.pop(key, None)) is not None:
                self._fail(pending, frames.WORKER_DIED, f"{worker.service}: {reason}")
        worker.inflight.clear()
        if not service.workers:
            while service.queue:
                pending = service.queue.popleft()
                if self.pending.pop((pending.client, pending.id), None) is not None:
                    self._fail(pending, frames.UNAVAILABLE, f"{service.name}: no live worker")
        log.warning("%s %s: %s", worker.service, worker.slot, reason)
        self.events.append(
            (f"worker.{worker.service}.down", {"slot": worker.slot, "reason": reason})
        )

    # -- routing -----------------------------------------------------------------------------

    def _drain(self, service: Service, now: float) -> None:
        while service.queue and (worker := least_loaded(service)) is not None:
            pending = service.queue.popleft()
            if (pending.client, pending.id) in self.pending:
                self._assign(worker, pending, now)

    def _assign(self, worker: Worker, pending: Pending, now: float) -> None:
        pending.worker = worker
        worker.inflight.add((pending.client, pending.id))
        remaining = max(1, int((pending.deadline - now) * 1000))
        header = {"c": pending.client, "id": pending.id, "t": remaining}
        if pending.key is not None:
            header["k"] = pending.key
        self._send(worker.identity, frames.REQUEST, frames.pack(header), pending.body)
        pending.body = b""

    def _release(self, worker: Worker, key: Key, now: float) -> None:
        worker.inflight.discard(key)
        if not worker.inflight:
            worker.idle_since = now
        service = self.services.get(worker.service)
        if service is not None and service.queue:
            self._drain(service, now)

    def _services_queue_remove(self, pending: Pending) -> None:
        service = self.services.get(pending.service)
        if service is not None:
            try:
                service.queue.remove(pending)
            except ValueError:
                pass

    # -- output ------------------------------------------------------------------------------

    def _send(
        self, identity: bytes, command: bytes, header: bytes, body: bytes | None = None
    ) -> None:
        msg = [identity, frames.PROTOCOL, command, header]
        if body is not None:
            msg.append(body)
        self.outbox.append(msg)

    def _error(self, client: bytes, rid: int, code: int, message: str) -> None:
        self._send(client, frames.ERROR, frames.pack({"id": rid, "code": code, "msg": message}))

    def _fail(self, pending: Pending, code: int, message: str) -> None:
        header: dict[str, Any] = {"id": pending.id, "code": code, "msg": message}
        if pending.meta:
            header["m"] = pending.meta
        self._send(pending.client, frames.ERROR, frames.pack(header))
