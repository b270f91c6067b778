"""The policy worker on the real bus: decisions, and the clock its limits run on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.messages import POLICY
from bus.worker import BusWorker
from policy.model import Policy, RateLimit, Rule
from workers.policy import PolicyService

ONE_PER_MINUTE = Policy(
    name="bots",
    agent="bot",
    rate_limit=RateLimit(max_per_minute=1),
    rules=[Rule(tools=["*"], action="allow")],
)


def _no_freezes(service: PolicyService) -> PolicyService:
    """No approval service here: the kill switch's set is known and empty (run() fetches it)."""
    service.freeze_set({"revision": 0, "freezes": []})
    return service


async def _decide(client: BusClient, agent: str, tool: str, params: dict[str, Any]) -> Any:
    return await client.request(
        POLICY, {"agent": agent, "tool": tool, "params": params}, timeout=5, key=agent
    )


async def test_a_wall_clock_step_does_not_reopen_the_rate_window(
    broker: Broker, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = BusWorker(
        endpoints.requests, POLICY, _no_freezes(PolicyService([ONE_PER_MINUTE])).handle
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.connected.wait(), 2)
        async with BusClient(endpoints.requests) as client:
            assert (await _decide(client, "bot", "t.a", {"n": 1}))["action"] == "allow"
            # The system clock is set two minutes ahead (NTP step, an operator): no real time
            # passed, so the per-minute window must still be full.
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 120)
            second = await _decide(client, "bot", "t.a", {"n": 2})
            assert (second["action"], second["rule"]) == ("rate_limited", "rate_limit"), second
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _registered(client: BusClient, *services: str) -> None:
    """Until the broker lists a worker of each service (`connected` is set when READY is sent)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        known = await client.request("mmi.services", {}, timeout=2)
        if all((known.get(s) or {}).get("workers") for s in services):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{services} never registered")


def _allow_all(name: str, limit: RateLimit | None = None) -> Policy:
    return Policy(name=name, agent="*", rate_limit=limit, rules=[Rule(tools=["*"], action="allow")])


async def test_a_newer_generation_is_fetched_once_and_keeps_the_windows(
    broker: Broker, endpoints: Endpoints
) -> None:
    from bus.messages import POLICYSET
    from policy.policyset import PolicySet

    limited = RateLimit(max_per_minute=2)
    served: list[int] = []
    newer = PolicySet.of(
        [
            Policy(
                name="all",
                agent="*",
                rate_limit=limited,
                rules=[Rule(tools=["t.*"], action="deny")],
            )
        ],
        5,
    )

    async def policyset(request: Any) -> Any:
        served.append(1)
        return newer.dump()

    async with (
        BusClient(endpoints.requests) as worker_client,
        BusClient(endpoints.requests) as client,
    ):
        service = _no_freezes(PolicyService([_allow_all("all", limited)], worker_client))
        workers = [
            BusWorker(endpoints.requests, POLICY, service.handle, capacity=16),
            BusWorker(endpoints.requests, POLICYSET, policyset, capacity=4),
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await _registered(client, POLICY, POLICYSET)
            first = await client.request(
                POLICY,
                {"agent": "a", "tool": "t.x", "params": {"n": 1}, "generation": 0},
                timeout=5,
                key="a",
            )
            assert first["action"] == "allow" and first["version"] == service.current.version
            # Several calls naming generation 5 at once: one fetch, all decided by the new set.
            answers = await asyncio.gather(
                *(
                    client.request(
                        POLICY,
                        {"agent": "b", "tool": "t.x", "params": {"n": i}, "generation": 5},
                        timeout=5,
                        key="b",
                    )
                    for i in range(2)
                )
            )
            assert [a["action"] for a in answers] == ["deny", "deny"]
            assert {a["version"] for a in answers} == {newer.version} and len(served) == 1
            # Agent a's window (one call under the old set) carried over: one more, then 429.
            assert (await _decide(client, "a", "t.y", {"n": 2}))["action"] == "deny"
            third = await _decide(client, "a", "t.y", {"n": 3})
            assert third["action"] == "rate_limited", third
        finally:
            for w in workers:
                w.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_no_policyset_means_503_not_old_rules(broker: Broker, endpoints: Endpoints) -> None:
    from bus.errors import BusError

    async with (
        BusClient(endpoints.requests) as worker_client,
        BusClient(endpoints.requests) as client,
    ):
        service = _no_freezes(PolicyService([_allow_all("all")], worker_client))
        worker = BusWorker(endpoints.requests, POLICY, service.handle, capacity=16)
        task = asyncio.create_task(worker.run())
        try:
            await _registered(client, POLICY)
            with pytest.raises(BusError) as info:
                await client.request(
                    POLICY, {"agent": "a", "tool": "t.x", "generation": 2}, timeout=5, key="a"
                )
            assert info.value.code == 503
            assert "cannot get policy set generation 2 (have 0)" in info.value.message
            assert (await _decide(client, "a", "t.x", {}))["action"] == "allow"  # generation 0: any
        finally:
            worker.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
