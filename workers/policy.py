"""Policy worker: answers `policy` requests with a decision from the pure engine.

The broker routes by agent id (affinity), so one worker owns each agent's rate-limit window and
loop-detection history: limits stay exact with N workers.

Live reload: a worker starts with its config's policies (generation 0). A request that names a
newer generation (`PolicyCheck.generation`, from the front-end that knows the current one) makes
it fetch the current set from `policyset` (the gateway's reloader) before deciding; so every
worker, on this host or another, decides a call made after a reload with the new set. Switching
keeps the rate limiter and loop detector: windows survive a reload (keyed by policy name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import ValidationError

from bus.client import BusClient
from bus.errors import BusError, bad_request, unavailable
from bus.messages import POLICY, POLICYSET, PolicyCheck, PolicySetQuery, ToolCall, upstream_service
from bus.worker import BusWorker, Request
from policy.engine import PolicyEngine
from policy.model import Policy
from policy.policyset import PolicySet

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 2.0  # s to get the current set from `policyset`


class PolicyService:
    def __init__(self, policies: list[Policy], client: BusClient | None = None) -> None:
        self.current = PolicySet.of(policies, 0)
        self.engine = PolicyEngine(policies)
        self.client = client  # for `policyset`; None: never switches (tests, no reloader)
        self._switching = asyncio.Lock()

    def switch(self, new: PolicySet) -> None:
        """Decide with `new` from now on; the counters carry over."""
        old = self.engine
        self.engine = PolicyEngine(
            new.policies, rate_limiter=old.rate_limiter, loop_detector=old.loop_detector
        )
        log.info(
            "policy set %s (generation %d, %d policies) replaces %s",
            new.version,
            new.generation,
            len(new.policies),
            self.current.version,
        )
        self.current = new

    async def _catch_up(self, generation: int) -> None:
        async with self._switching:  # one fetch for the requests that all want the new set
            if self.current.generation >= generation or self.client is None:
                return
            try:
                reply = await self.client.request(
                    POLICYSET, PolicySetQuery().dump(), timeout=FETCH_TIMEOUT
                )
                new = PolicySet.load(reply)
            except (BusError, ValueError) as exc:
                # Deciding with rules the operator has replaced would be wrong: refuse instead.
                raise unavailable(
                    f"policy: cannot get policy set generation {generation} "
                    f"(have {self.current.generation}): {exc}"
                ) from None
            if new.generation >= generation and new.version != self.current.version:
                self.switch(new)
            elif new.generation >= generation:
                self.current = new  # same rules, newer generation: nothing to rebuild

    async def handle(self, request: Request) -> Any:
        try:
            check = PolicyCheck.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(f"policy: invalid request: {exc.errors()[0]['msg']}") from None
        started = time.time_ns()  # the decision's span (bus/PROTOCOL.md, Timings)
        if check.generation > self.current.generation:
            await self._catch_up(check.generation)
        # Monotonic: a wall-clock step (NTP, or set by hand) must not reopen a window.
        now = time.monotonic()
        decision = self.engine.evaluate(check.agent, check.tool, check.params, now).model_dump()
        decision["version"] = self.current.version
        timing = [started, time.time_ns()]
        then = check.then
        if then is not None and decision["action"] == "allow":
            if then.request is not None:
                body = then.request.model_copy(update={"timeout": then.timeout}).dump()
            else:
                body = ToolCall(
                    tool=then.tool,
                    arguments=check.params,
                    timeout=then.timeout,
                    traceparent=then.traceparent,
                ).dump()
            request.forward(
                upstream_service(then.server), body, meta={"policy": decision, "policy_ns": timing}
            )
            return None
        request.add_meta(policy_ns=timing)
        return decision


async def run(endpoint: str, policies: list[Policy], slot: str) -> None:
    async with BusClient(endpoint) as client:
        service = PolicyService(policies, client)
        # Decisions are pure CPU and quick: many may be queued here, they run one after another.
        await BusWorker(endpoint, POLICY, service.handle, capacity=256, slot=slot).run()
