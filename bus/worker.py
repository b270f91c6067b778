"""Async worker helper: serve one service on the bus. A worker on it is a handler function:

    async def echo(request: Request) -> Any:
        return request.body

    await BusWorker(endpoint, "echo", echo, capacity=16).run()

Each request runs as its own task (up to `capacity` at once, enforced by the broker); the
helper owns the socket, heartbeats, reconnects after a broker restart and maps exceptions to
ERROR replies.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

from bus import frames
from bus.endpoints import CurveClient
from bus.errors import BusError, bad_request, internal
from bus.json_values import refusal
from bus.transport import CONNECTED, DISCONNECTED, HANDSHAKE_FAILED, AsyncDealer, RefusedHandshakes

log = logging.getLogger(__name__)

_UNPACKABLE = (
    ValueError,
    TypeError,
    OverflowError,
)  # what msgpack raises for what it cannot encode


@dataclass(slots=True)
class Request:
    body: Any
    key: str | None
    deadline: float  # time.monotonic() value
    _worker: BusWorker
    _client: bytes
    _id: int
    _questions: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    # Never reused within a request: a size-based id collides once an earlier question is answered.
    _question_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    forwarded: bool = False
    answer_meta: dict[str, Any] | None = None  # rides on the final REPLY / ERROR header as `m`

    def add_meta(self, **meta: Any) -> None:
        """Tell the caller something beside the answer (e.g. when the upstream call started and
        ended): merged into the meta the caller gets with the final REPLY or ERROR."""
        self.answer_meta = {**(self.answer_meta or {}), **meta}

    def forward(
        self, service: str, body: Any, *, key: str | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Hand this request on to `service` (the broker keeps its caller, id and deadline) instead
        of answering it; `meta` reaches the caller with the final answer. The handler then
        returns."""
        header: dict[str, Any] = {"c": self._client, "id": self._id, "s": service}
        if key is not None:
            header["k"] = key
        if meta:
            header["m"] = meta
        self.forwarded = True
        self._worker._send(frames.FORWARD, header, frames.pack(body))

    @property
    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def partial(self, body: Any) -> None:
        """Stream a partial answer (progress, log message) to the caller."""
        self._worker._send(frames.PARTIAL, {"c": self._client, "id": self._id}, frames.pack(body))

    async def ask(self, method: str, params: Any, timeout: float) -> Any:
        """Ask the caller a question while this request runs (an upstream's sampling or
        elicitation request) and wait for its answer: `{"result": ...}` or `{"error": ...}`."""
        question_id = next(self._question_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._questions[question_id] = future
        self.partial({"ask": {"id": question_id, "method": method, "params": params}})
        try:
            return await asyncio.wait_for(future, min(timeout, self.remaining))
        except TimeoutError:
            return {
                "error": {"code": -32001, "message": f"the caller did not answer {method} in time"}
            }
        finally:
            self._questions.pop(question_id, None)

    def _answered(self, body: Any) -> None:
        question = body.get("id") if isinstance(body, dict) else None
        future = self._questions.get(question) if isinstance(question, int) else None
        if future is not None and not future.done():
            future.set_result(body)


Handler = Callable[[Request], Awaitable[Any]]


class BusWorker:
    def __init__(
        self,
        endpoint: str,
        service: str,
        handler: Handler,
        *,
        capacity: int = 1,
        slot: str | None = None,
        meta: Any = None,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.service = service
        self.handler = handler
        self.capacity = capacity
        self.slot = slot
        self.meta = meta
        self.ctx = ctx or zmq.Context.instance()
        self.curve = curve
        self._dealer: AsyncDealer | None = None
        self._refused = RefusedHandshakes(log, f"{self.service}: ")
        self._linked = False  # a connection to the broker is up (handshake done)
        self._tasks: dict[tuple[bytes, int], asyncio.Task[None]] = {}
        self._requests: dict[tuple[bytes, int], Request] = {}
        self._stopping = False
        self._heard = 0.0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Serve until stop(); reconnects whenever the broker goes silent."""
        while not self._stopping:
            await self._session()

    def stop(self) -> None:
        self._stopping = True
        self._send(frames.DISCONNECT, {})

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout`) until the requests being served have answered, e.g. before
        stop() when what they wait on is gone: each then says why, not just "worker died"."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout)

    def update_meta(self, meta: Any) -> None:
        self.meta = meta
        self._send(frames.UPDATE, {}, frames.pack(meta))

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        """Publish an event through the broker (EVENT on this worker's own connection, so a worker
        on another host publishes too). Best effort like every event; the broker republishes only
        topics this worker may publish (PROTOCOL.md, Events)."""
        self._send(frames.EVENT, {"topic": topic}, frames.pack(body))

    async def _session(self) -> None:
        self._linked = False
        self._dealer = AsyncDealer(
            self.ctx, self.endpoint, self._on_message, on_event=self._on_event, curve=self.curve
        )
        self._ready()
        interval = frames.HEARTBEAT_INTERVAL
        self._heard = time.monotonic()
        try:
            while not self._stopping:
                await asyncio.sleep(interval)
                # `s` marks a worker's heartbeat: a broker that does not know us (it restarted)
                # answers DISCONNECT, and we say READY again.
                self._send(frames.HEARTBEAT, {"s": self.service})
                if time.monotonic() - self._heard > interval * frames.LIVENESS:
                    log.warning("%s: broker silent, reconnecting", self.service)
                    break
        finally:
            self.connected.clear()
            self._forget_requests()
            self._dealer.close()
            self._dealer = None

    def _on_event(self, event: int, value: int) -> None:
        if event == CONNECTED:
            self._linked = True
        elif event == DISCONNECTED and self._linked:
            # The connection to the broker dropped. The broker will see our reconnection as a
            # new peer: what it gave the old one is failed (or forgotten, if it restarted).
            self._linked = False
            log.warning("%s: connection to the broker lost; registering again", self.service)
            self._forget_requests()
            if not self._stopping:
                self._ready()  # queued: the first thing the broker hears after the reconnect
        elif event in HANDSHAKE_FAILED:
            self._refused(event, self.endpoint)

    def _forget_requests(self) -> None:
        """Cancel every request in progress: the broker has already failed them (or forgotten)."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()

    def _ready(self) -> None:
        header: dict[str, Any] = {"s": self.service, "n": self.capacity}
        if self.slot:
            header["slot"] = self.slot
        self._send(frames.READY, header, frames.pack(self.meta))
        self.connected.set()

    def _send(self, command: bytes, header: dict[str, Any], body: bytes | None = None) -> None:
        if self._dealer is None:
            return
        msg = [frames.PROTOCOL, command, frames.pack(header)]
        if body is not None:
            msg.append(body)
        self._dealer.send(msg)

    def _on_message(self, msg: list[bytes]) -> None:
        self._heard = time.monotonic()
        if len(msg) < 3 or msg[0] != frames.PROTOCOL:
            log.warning("%s: dropping malformed message", self.service)
            return
        command = msg[1]
        if command == frames.HEARTBEAT:
            return
        if command == frames.DISCONNECT:
            # The broker does not know us (it restarted, or declared us dead). Requests still
            # running here are answered anyway: the broker drops answers it no longer expects.
            if not self._stopping:
                self._ready()
            return
        try:
            header = frames.unpack(msg[2])
            key = (bytes(header["c"]), int(header["id"]))
        except (*frames.UNDECODABLE, KeyError):
            log.warning("%s: dropping message with bad header", self.service)
            return
        if command == frames.REQUEST:
            try:
                body = frames.unpack(msg[3])
            except (*frames.UNDECODABLE, IndexError):
                self._reply_error(key, bad_request("undecodable request body"))
                return
            deadline = time.monotonic() + int(header.get("t", 1000)) / 1000
            request = Request(body, header.get("k"), deadline, self, key[0], key[1])
            self._requests[key] = request
            self._tasks[key] = asyncio.create_task(self._serve(key, request))
        elif command == frames.ANSWER:
            asked = self._requests.get(key)
            if asked is not None:
                try:
                    asked._answered(frames.unpack(msg[3]))
                except (*frames.UNDECODABLE, IndexError):
                    log.warning("%s: dropping undecodable answer", self.service)
        elif command == frames.CANCEL:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()

    async def _serve(self, key: tuple[bytes, int], request: Request) -> None:
        try:
            await self._serve_one(key, request)
        finally:
            self._requests.pop(key, None)

    async def _serve_one(self, key: tuple[bytes, int], request: Request) -> None:
        try:
            result = await self.handler(request)
        except asyncio.CancelledError:
            return  # cancelled by the caller or the broker: nobody waits for an answer
        except BusError as exc:
            self._reply_error(key, exc, request.answer_meta)
        except Exception as exc:
            log.exception("%s: handler failed", self.service)
            self._reply_error(key, internal(f"{self.service}: {type(exc).__name__}: {exc}"))
        else:
            if self._tasks.pop(key, None) is not None and not request.forwarded:
                header: dict[str, Any] = {"c": key[0], "id": key[1]}
                if request.answer_meta:
                    header["m"] = request.answer_meta
                try:
                    body = frames.pack(result)
                except _UNPACKABLE as exc:  # e.g. an upstream's answer nested past msgpack's limit
                    why = refusal(result, "answer") or f"{type(exc).__name__}: {exc}"
                    log.error("%s: answer not sent: %s", self.service, why)
                    self._reply_error(key, internal(f"{self.service}: answer not sendable: {why}"))
                    return
                self._send(frames.REPLY, header, body)
            return
        self._tasks.pop(key, None)

    def _reply_error(
        self, key: tuple[bytes, int], error: BusError, meta: dict[str, Any] | None = None
    ) -> None:
        header: dict[str, Any] = {
            "c": key[0],
            "id": key[1],
            "code": error.code,
            "msg": error.message,
        }
        if meta:
            header["m"] = meta
        self._send(frames.ERROR, header)
