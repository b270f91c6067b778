"""The bus end to end over real ipc sockets: broker (thread), workers and clients (asyncio)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus import frames
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.worker import BusWorker, Request


async def _start_worker(
    endpoints: Endpoints, service: str, handler: Any, **kw: Any
) -> tuple[BusWorker, asyncio.Task[None]]:
    worker = BusWorker(endpoints.requests, service, handler, **kw)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.connected.wait(), 2)
    return worker, task


async def _wait_for_service(client: BusClient, service: str, workers: int = 1) -> None:
    """Until the broker lists `workers` workers of `service` (at least; 0: exactly none)."""
    for _ in range(100):
        report = await client.request("mmi.services", {}, timeout=1)
        listed = len(report.get(service, {}).get("workers", []))
        if listed >= workers if workers else listed == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{service}: never {workers} workers")


async def echo(request: Request) -> Any:
    return {"echo": request.body}


async def test_request_reply(broker: Broker, endpoints: Endpoints) -> None:
    _, task = await _start_worker(endpoints, "echo", echo, capacity=8)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "echo")
        replies = await asyncio.gather(
            *(client.request("echo", {"n": i}, timeout=2) for i in range(200))
        )
        assert replies == [{"echo": {"n": i}} for i in range(200)]
    task.cancel()


async def test_unknown_service_is_unavailable_at_once(broker: Broker, endpoints: Endpoints) -> None:
    async with BusClient(endpoints.requests) as client:
        with pytest.raises(BusError) as err:
            await client.request("nope", {}, timeout=5)
        assert err.value.code == frames.UNAVAILABLE
        assert "nope" in err.value.message


async def test_handler_errors_are_answered(broker: Broker, endpoints: Endpoints) -> None:
    async def failing(request: Request) -> Any:
        if request.body == "bus":
            raise BusError(frames.NOT_FOUND, "no such thing")
        raise ValueError("boom")

    _, task = await _start_worker(endpoints, "f", failing)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "f")
        with pytest.raises(BusError) as err:
            await client.request("f", "bus", timeout=2)
        assert (err.value.code, err.value.message) == (404, "no such thing")
        with pytest.raises(BusError) as err:
            await client.request("f", "x", timeout=2)
        assert err.value.code == frames.INTERNAL and "ValueError: boom" in err.value.message
    task.cancel()


async def test_deadline_and_cancel_reach_worker(broker: Broker, endpoints: Endpoints) -> None:
    cancelled = asyncio.Event()

    async def slow(request: Request) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    _, task = await _start_worker(endpoints, "slow", slow)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "slow")
        with pytest.raises(BusError) as err:
            await client.request("slow", {}, timeout=0.2)
        assert err.value.code == frames.TIMEOUT and "slow" in err.value.message
        await asyncio.wait_for(cancelled.wait(), 2)
    task.cancel()


async def test_partials_arrive_before_reply(broker: Broker, endpoints: Endpoints) -> None:
    async def progress(request: Request) -> Any:
        for i in range(3):
            request.partial({"progress": i})
            await asyncio.sleep(0)
        return "done"

    _, task = await _start_worker(endpoints, "p", progress)
    seen: list[Any] = []
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "p")
        assert await client.request("p", {}, timeout=2, on_partial=seen.append) == "done"
    assert seen == [{"progress": 0}, {"progress": 1}, {"progress": 2}]
    task.cancel()


async def test_load_is_shared_and_affinity_is_sticky(broker: Broker, endpoints: Endpoints) -> None:
    def named(name: str) -> Any:
        async def handler(request: Request) -> Any:
            await asyncio.sleep(0.01)
            return name

        return handler

    tasks = [
        (await _start_worker(endpoints, "s", named(f"w{i}"), slot=f"s:{i}", capacity=2))[1]
        for i in range(3)
    ]
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "s", 3)
        spread = await asyncio.gather(*(client.request("s", {}, timeout=5) for _ in range(60)))
        assert set(spread) == {"w0", "w1", "w2"}
        for agent in ("alice", "bob", "carol", "dave"):
            served = await asyncio.gather(
                *(client.request("s", {}, timeout=5, key=agent) for _ in range(20))
            )
            assert len(set(served)) == 1, (agent, served)
    for t in tasks:
        t.cancel()


async def test_worker_death_fails_inflight_with_clear_error(
    broker: Broker, endpoints: Endpoints
) -> None:
    holding = asyncio.Event()

    async def hang(request: Request) -> Any:
        holding.set()
        await asyncio.Event().wait()  # never answers

    _, task = await _start_worker(endpoints, "upstream.fs", hang)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "upstream.fs")
        call = asyncio.create_task(client.request("upstream.fs", {}, timeout=20))
        await asyncio.wait_for(holding.wait(), 5)  # the worker has it
        task.cancel()  # the worker vanishes without a word, like kill -9
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BusError) as err:
            await call
        assert err.value.code == frames.WORKER_DIED
        assert err.value.message == "upstream.fs: worker died"
        assert loop.time() - started < frames.HEARTBEAT_INTERVAL * (frames.LIVENESS + 2)
        with pytest.raises(BusError) as err:
            await client.request("upstream.fs", {}, timeout=2)
        assert err.value.code == frames.UNAVAILABLE


async def test_events_fan_out_through_the_broker(broker: Broker, endpoints: Endpoints) -> None:
    from bus.events import Publisher, Subscriber

    assert endpoints.events_out and endpoints.events_in
    traces = Subscriber(endpoints.events_out, "trace.")
    everything = Subscriber(endpoints.events_out)
    publisher = Publisher(endpoints.events_in)
    got: list[tuple[str, Any]] = []
    got_all: list[tuple[str, Any]] = []

    async def collect(sub: Subscriber, into: list[tuple[str, Any]], n: int) -> None:
        async for event in sub:
            into.append(event)
            if len(into) == n:
                return

    collecting = asyncio.gather(collect(traces, got, 1), collect(everything, got_all, 2))
    # Subscriptions travel to the publisher asynchronously (slow joiner): publish until seen.
    for i in range(100):
        publisher.publish("worker.x.ready", {"i": i})
        publisher.publish("trace.claude.recorded", {"trace_id": "t1"})
        await asyncio.sleep(0.02)
        if len(got) >= 1 and len(got_all) >= 2:
            break
    await asyncio.wait_for(collecting, 2)
    assert got == [("trace.claude.recorded", {"trace_id": "t1"})]
    assert {topic for topic, _ in got_all} <= {"worker.x.ready", "trace.claude.recorded"}
    for closable in (traces, everything, publisher):
        closable.close()


async def test_worker_asks_the_caller_during_a_request(
    broker: Broker, endpoints: Endpoints
) -> None:
    async def asking(request: Request) -> Any:
        answer = await request.ask("sampling/createMessage", {"q": request.body}, timeout=2)
        return {"got": answer}

    _, task = await _start_worker(endpoints, "asker", asking)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "asker")

        def on_partial(partial: Any) -> None:
            ask = partial["ask"]
            client.answer(ask["bus_id"], {"id": ask["id"], "result": {"a": ask["params"]["q"] * 2}})

        reply = await client.request("asker", 21, timeout=3, on_partial=on_partial)
        assert reply == {"got": {"id": 1, "result": {"a": 42}}}
        # A caller that cannot answer gets an immediate error back to the worker, not a hang.
        refused = await client.request("asker", 1, timeout=3)
        assert (
            refused["got"]["error"]["message"]
            == "the caller cannot answer sampling/createMessage requests"
        )
    task.cancel()


async def test_a_worker_forwards_and_the_caller_gets_the_next_answer_with_meta(
    broker: Broker, endpoints: Endpoints
) -> None:
    async def gate(request: Request) -> Any:
        if request.body["n"] % 2:
            return {"refused": request.body["n"]}  # answered here
        request.forward("echo", {"via": request.body["n"]}, meta={"gate": "passed"})
        return None

    async def partial_echo(request: Request) -> Any:
        request.partial({"progress": 1})
        return await echo(request)

    _, gate_task = await _start_worker(endpoints, "gate", gate, capacity=4)
    _, echo_task = await _start_worker(endpoints, "echo", partial_echo, capacity=4)
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "gate")
        await _wait_for_service(client, "echo")
        partials: list[Any] = []
        replies = await asyncio.gather(
            *(
                client.exchange("gate", {"n": n}, timeout=2, on_partial=partials.append)
                for n in range(6)
            )
        )
        assert [(r.body, r.meta) for r in replies] == [
            ({"echo": {"via": n}}, {"gate": "passed"}) if n % 2 == 0 else ({"refused": n}, {})
            for n in range(6)
        ]
        assert partials == [{"progress": 1}] * 3
        echo_task.cancel()
        await asyncio.gather(echo_task, return_exceptions=True)
        await _wait_for_service(client, "echo", workers=0)  # the broker saw the worker go
        with pytest.raises(BusError) as err:
            await client.request("gate", {"n": 0}, timeout=2)
        assert err.value.code == frames.UNAVAILABLE and err.value.meta == {"gate": "passed"}
    gate_task.cancel()


async def test_concurrent_questions_of_one_request_keep_distinct_ids(
    broker: Broker, endpoints: Endpoints
) -> None:
    # q1 and q2 are asked together; q1 is answered, then q3 is asked while q2 still waits.
    # Each answer must reach its own question (ids are never reused within a request).
    async def asking(request: Request) -> Any:
        first = asyncio.create_task(request.ask("q", {"n": 1}, timeout=3))
        second = asyncio.create_task(request.ask("q", {"n": 2}, timeout=3))
        answered = await first
        third = asyncio.create_task(request.ask("q", {"n": 3}, timeout=3))
        return [answered, await second, await third]

    _, task = await _start_worker(endpoints, "asker", asking)
    asked: list[dict[str, Any]] = []
    async with BusClient(endpoints.requests) as client:
        await _wait_for_service(client, "asker")

        def reply(ask: dict[str, Any]) -> None:
            client.answer(ask["bus_id"], {"id": ask["id"], "result": ask["params"]["n"]})

        def on_partial(partial: Any) -> None:
            asked.append(partial["ask"])
            n = partial["ask"]["params"]["n"]
            if n == 1:
                reply(asked[0])
            elif n == 3:  # q3 first, then the q2 held until now
                reply(asked[2])
                reply(asked[1])

        answers = await client.request("asker", {}, timeout=10, on_partial=on_partial)
    assert answers == [{"id": a["id"], "result": a["params"]["n"]} for a in asked]
    assert len({a["id"] for a in asked}) == 3, asked
    task.cancel()


@pytest.mark.parametrize("attempt", range(5))
async def test_answers_sent_before_a_worker_leaves_reach_their_callers(
    broker: Broker, endpoints: Endpoints, attempt: int
) -> None:
    """A worker answers what it holds (drain), says DISCONNECT and closes its connection at once,
    as an upstream worker does when its MCP server dies: the callers get those answers, not
    WORKER_DIED (the broker reads what a peer sent before it applies the peer's disconnect)."""
    gone = asyncio.Event()

    async def handler(request: Request) -> Any:
        await gone.wait()
        raise BusError(frames.UPSTREAM_GONE, f"upstream went away ({request.body})")

    worker = BusWorker(endpoints.requests, "s", handler, capacity=64)
    serving = asyncio.create_task(worker.run())
    async with BusClient(endpoints.requests) as client:
        while not (await client.request("mmi.services", {}, timeout=1)).get("s"):
            await asyncio.sleep(0.01)
        calls = [asyncio.create_task(client.request("s", n, timeout=10)) for n in range(16)]
        while (await client.request("mmi.services", {}, timeout=1))["s"]["workers"][0][
            "inflight"
        ] < 16:
            await asyncio.sleep(0.01)
        gone.set()
        await worker.drain(1.0)
        worker.stop()
        serving.cancel()
        errors = await asyncio.gather(*calls, return_exceptions=True)
    await asyncio.gather(serving, return_exceptions=True)
    assert [getattr(e, "code", e) for e in errors] == [frames.UPSTREAM_GONE] * 16, errors
