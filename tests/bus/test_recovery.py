"""Recovery of the bus itself: the broker restarts under load, quickly or slowly, and clients
and workers find each other again without a hung request (PROTOCOL.md, Heartbeats and liveness)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import frames
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.worker import BusWorker, Request


class BrokerThread:
    def __init__(self, endpoints: Endpoints) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.broker = Broker(endpoints, self.ctx)
        self.thread = threading.Thread(target=self.broker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Like kill -9 as far as peers can tell: sockets closed, nothing said."""
        self.broker.stop()
        self.thread.join(timeout=2)
        self.ctx.term()


async def _services(client: BusClient) -> dict[str, Any]:
    return await client.request("mmi.services", {}, timeout=1)  # type: ignore[no-any-return]


async def _until_registered(client: BusClient, service: str, timeout: float = 2.0) -> float:
    """Wait until `service` has a worker; return how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < timeout:
        try:
            if (await _services(client)).get(service, {}).get("workers"):
                return loop.time() - started
        except BusError:
            pass  # the broker is restarting
        await asyncio.sleep(0.02)
    raise AssertionError(f"{service} not registered after {timeout}s")


async def _settle(call: asyncio.Task[Any]) -> tuple[float, BusError | None]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await call
    except BusError as exc:
        return loop.time() - started, exc
    return loop.time() - started, None


@pytest.mark.parametrize("downtime", [0.05, 2.0], ids=["quick-restart", "slow-restart"])
async def test_broker_restart_under_load(endpoints: Endpoints, downtime: float) -> None:
    """In-flight requests fail at once with a clear error (not at their deadline), the worker is
    registered again within a heartbeat of the broker's return, and new requests all succeed:
    none is failed by a stale re-registration (one DISCONNECT per worker, idempotent READY)."""
    release = asyncio.Event()
    holding: list[Request] = []

    async def handler(request: Request) -> Any:
        if request.body == "hold":
            holding.append(request)
            await release.wait()  # answered while the broker is away: queued, then dropped
        return request.body

    broker = BrokerThread(endpoints)
    worker = BusWorker(endpoints.requests, "s", handler, capacity=64)
    task = asyncio.create_task(worker.run())
    try:
        async with BusClient(endpoints.requests) as client:
            await _until_registered(client, "s")
            held = [
                asyncio.create_task(
                    _settle(asyncio.create_task(client.request("s", "hold", timeout=30)))
                )
                for _ in range(20)
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(holding) < 20:  # every one of them reached the worker
                assert loop.time() < deadline, f"{len(holding)} of 20 held"
                await asyncio.sleep(0.005)
            broker.stop()
            results = await asyncio.gather(*held)
            for took, error in results:
                assert error is not None and error.code == frames.UNAVAILABLE, error
                assert error.message == "broker connection lost"
                assert took < 0.5, took  # the socket monitor saw the connection drop
            release.set()  # their answers are queued towards the dead broker
            await asyncio.sleep(downtime)  # the broker stays away this long: the case tested
            broker = BrokerThread(endpoints)
            took = await _until_registered(client, "s", 5)
            assert took < frames.HEARTBEAT_INTERVAL + 0.3, took
            replies = await asyncio.gather(*(client.request("s", i, timeout=5) for i in range(200)))
            assert replies == list(range(200))
    finally:
        broker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_client_fails_requests_when_the_broker_hangs(
    endpoints: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that is alive (connection up) but silent: heartbeats catch it in LIVENESS."""
    caplog.set_level(logging.WARNING, "bus.client")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    mute = ctx.socket(zmq.ROUTER)  # accepts the connection, never answers
    mute.bind(endpoints.requests)
    try:
        async with BusClient(endpoints.requests) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(BusError) as err:
                await client.request("s", 1, timeout=30)
            assert (
                err.value.code == frames.UNAVAILABLE and err.value.message == "broker unavailable"
            )
            limit = frames.HEARTBEAT_INTERVAL * (frames.LIVENESS + 1) + 0.2
            assert loop.time() - started < limit
        assert "broker silent: failing 1 in-flight requests" in caplog.text  # it was sent: lost
    finally:
        mute.close(0)
        ctx.term()


async def test_a_broker_not_up_yet_is_no_failure_to_warn_about(
    endpoints: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    """A cold start (`--mcp` starting the mesh): the client polls before the broker is up. Its
    requests wait for a connection and fail on their own ("broker unavailable", for the caller
    to handle); nothing sent was lost, so nothing is said about failing in-flight requests."""
    caplog.set_level(logging.WARNING, "bus.client")
    broker: BrokerThread | None = None
    async with BusClient(endpoints.requests) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        quiet_for = frames.HEARTBEAT_INTERVAL * (frames.LIVENESS + 2)  # past the silence check
        try:
            while loop.time() - started < quiet_for:  # as the catalogue polls while it waits
                with pytest.raises(BusError) as err:
                    await client.request("mmi.services", {}, timeout=1.0)
                assert err.value.message == "broker unavailable"
            broker = BrokerThread(endpoints)
            assert isinstance(await client.request("mmi.services", {}, timeout=5.0), dict)
        finally:
            if broker is not None:
                broker.stop()
    assert "broker silent" not in caplog.text


_WORKER = """
import asyncio, sys
from bus.worker import BusWorker

async def hang(request):
    print("serving", flush=True)
    await asyncio.sleep(60)

asyncio.run(BusWorker(sys.argv[1], "victim", hang, capacity=4).run())
"""


async def test_killed_worker_process_fails_its_requests_at_once(
    endpoints: Endpoints, tmp_path: Path
) -> None:
    """kill -9 closes the worker's connection: the broker sees it (socket monitor) and fails
    what the worker held at once, instead of after LIVENESS missed heartbeats."""
    broker = BrokerThread(endpoints)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WORKER,
        endpoints.requests,
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with BusClient(endpoints.requests) as client:
            await _until_registered(client, "victim", 10)
            calls = [
                asyncio.create_task(
                    _settle(asyncio.create_task(client.request("victim", i, timeout=30)))
                )
                for i in range(3)
            ]
            assert proc.stdout is not None
            for _ in range(3):
                await asyncio.wait_for(proc.stdout.readline(), 5)
            proc.send_signal(signal.SIGKILL)
            for took, error in await asyncio.gather(*calls):
                assert error is not None and error.code == frames.WORKER_DIED, error
                assert error.message == "victim: worker died"
                assert took < 0.3, took  # not the heartbeat window (1.5 s)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        broker.stop()
