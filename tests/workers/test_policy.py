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

ONE_PER_MINUTE = Policy(name="bots", agent="bot", rate_limit=RateLimit(max_per_minute=1),
                        rules=[Rule(tools=["*"], action="allow")])


async def _decide(client: BusClient, agent: str, tool: str, params: dict[str, Any]) -> Any:
    return await client.request(POLICY, {"agent": agent, "tool": tool, "params": params},
                                timeout=5, key=agent)


async def test_a_wall_clock_step_does_not_reopen_the_rate_window(
    broker: Broker, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = BusWorker(endpoints.requests, POLICY, PolicyService([ONE_PER_MINUTE]).handle)
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
