"""Policy worker: answers `policy` requests with a decision from the pure engine.

The broker routes by agent id (affinity), so one worker owns each agent's rate-limit window and
loop-detection history: limits stay exact with N workers.

Live reload: a worker starts with its config's policies (generation 0). A request that names a
newer generation (`PolicyCheck.generation`, from the front-end that knows the current one) makes
it fetch the current set from `policyset` (the gateway's reloader) before deciding; so every
worker, on this host or another, decides a call made after a reload with the new set. Switching
keeps the rate limiter and loop detector: windows survive a reload (keyed by policy name).

Kill switch (policy/freezes.py): a worker loads the freezes in force from the approval service
and decides nothing before it has them (a request at start waits for them, up to FREEZE_WAIT
seconds, rather than fail while the approval service is still starting); then each
`freeze.set.changed` event replaces them (a worker on another host,
which cannot subscribe, asks every FREEZE_POLL seconds instead; every worker also asks every
FREEZE_RESYNC seconds, in case an event was lost). A call a freeze stops is refused
before any rule, limit, grant or memory is looked at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import ValidationError

from bus.approval_messages import FREEZES_CHANGED, FreezeList, FreezeSet
from bus.client import BusClient
from bus.errors import BusError, bad_request, unavailable
from bus.events import Subscriber
from bus.messages import (
    APPROVAL,
    POLICY,
    POLICYSET,
    PolicyCheck,
    PolicySetQuery,
    tool_call,
    upstream_service,
)
from bus.worker import BusWorker, Request
from policy.engine import PolicyEngine
from policy.freezes import Freeze, stopping
from policy.model import Policy
from policy.policyset import PolicySet

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 2.0  # s to get the current set from `policyset`
FREEZE_WAIT = 10.0  # s a request at start waits for the freezes before it is refused
FREEZE_SLOW = 10.0  # s of waiting for the approval service before a warning
FREEZE_POLL = 1.0  # s between asking for the freezes, on a host without the event sockets
# s between asking anyway, with events: an event lost while the broker restarted is made up for
FREEZE_RESYNC = 10.0


class PolicyService:
    def __init__(self, policies: list[Policy], client: BusClient | None = None) -> None:
        self.current = PolicySet.of(policies, 0)
        self.engine = PolicyEngine(policies)
        self.client = client  # for `policyset`; None: never switches (tests, no reloader)
        self._switching = asyncio.Lock()
        self.freezes: list[Freeze] = []
        self.freeze_revision = -1  # none known yet
        self.freezes_known = asyncio.Event()

    def freeze_set(self, body: Any) -> None:
        """Apply the freezes announced or fetched, unless we already know a newer set."""
        try:
            new = FreezeSet.model_validate(body)
            freezes = [Freeze.model_validate(f) for f in new.freezes]
        except ValidationError as exc:
            log.warning("freezes: ignoring a malformed set: %s", exc.errors()[0]["msg"])
            return
        if new.revision > self.freeze_revision:
            if len(freezes) != len(self.freezes):
                log.info("freezes: %d in force (revision %d)", len(freezes), new.revision)
            self.freezes, self.freeze_revision = freezes, new.revision
            self.freezes_known.set()

    async def fetch_freezes(self) -> None:
        """The freezes in force, from the approval service (raises BusError)."""
        assert self.client is not None
        reply = await self.client.request(APPROVAL, FreezeList().dump(), timeout=FETCH_TIMEOUT)
        self.freeze_set(reply)

    async def load_freezes(self) -> None:
        """Before serving: wait for the approval service rather than serve a frozen agent."""
        # The approval service usually starts beside us: waiting for it is normal, said once;
        # still waiting after FREEZE_SLOW seconds is worth a warning (once, not every retry).
        loop = asyncio.get_running_loop()
        started, said = loop.time(), 0
        while True:
            try:
                await self.fetch_freezes()
                return
            except BusError as exc:
                waited = loop.time() - started
                if said == 0:
                    log.info("freezes: waiting for the approval service (%s)", exc)
                    said = 1
                elif said == 1 and waited >= FREEZE_SLOW:
                    log.warning(
                        "freezes: not loaded after %.0f s (%s); not serving until they are",
                        waited,
                        exc,
                    )
                    said = 2
                await asyncio.sleep(0.5)

    async def follow_freezes(self, events_out: str | None) -> None:
        """Each `freeze.set.changed` as it comes (or, with no event socket here, a poll)."""
        if events_out is None:
            while True:
                await asyncio.sleep(FREEZE_POLL)
                try:
                    await self.fetch_freezes()
                except BusError as exc:
                    log.warning("freezes: cannot refresh: %s", exc)
        subscriber = Subscriber(events_out, FREEZES_CHANGED)
        # A subscription takes effect a moment after it is made: ask once more after that, then
        # now and then (best-effort events: one lost while the broker restarted).
        recheck = asyncio.create_task(self._resync(1.0))
        try:
            async for _topic, body in subscriber:
                self.freeze_set(body)
        finally:
            recheck.cancel()
            subscriber.close()

    async def _resync(self, first: float) -> None:
        delay = first
        while True:
            await asyncio.sleep(delay)
            delay = FREEZE_RESYNC
            try:
                await self.fetch_freezes()
            except BusError as exc:
                log.warning("freezes: cannot refresh: %s", exc)

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

    async def _await_freezes(self) -> None:
        """Never decide without the kill switch: a request at start waits for the freezes."""
        try:
            async with asyncio.timeout(FREEZE_WAIT):
                await self.freezes_known.wait()
        except TimeoutError:
            raise unavailable(
                "policy: the kill switch's freezes are not loaded yet (is the approval service up?)"
            ) from None

    async def handle(self, request: Request) -> Any:
        try:
            check = PolicyCheck.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(f"policy: invalid request: {exc.errors()[0]['msg']}") from None
        if self.freeze_revision < 0:
            await self._await_freezes()
        started = time.time_ns()  # the decision's span (bus/PROTOCOL.md, Timings)
        if self.freezes and (frozen := stopping(self.freezes, check.agent, check.tool)):
            request.add_meta(policy_ns=[started, time.time_ns()])
            return frozen.decision().model_dump() | {"version": self.current.version}
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
                body = tool_call(
                    tool=then.tool,
                    arguments=check.params,
                    timeout=then.timeout,
                    traceparent=then.traceparent,
                )
            request.forward(
                upstream_service(then.server), body, meta={"policy": decision, "policy_ns": timing}
            )
            return None
        request.add_meta(policy_ns=timing)
        return decision


async def run(
    endpoint: str, policies: list[Policy], slot: str, events_out: str | None = None
) -> None:
    async with BusClient(endpoint) as client:
        service = PolicyService(policies, client)
        # Subscribed before loading: a freeze made in between is not missed (revisions order).
        following = asyncio.create_task(service.follow_freezes(events_out))
        # Serving at once: a request that comes before the freezes waits for them (handle).
        loading = asyncio.create_task(service.load_freezes())
        try:
            # Decisions are pure CPU and quick: many may be queued here, one after another.
            await BusWorker(endpoint, POLICY, service.handle, capacity=256, slot=slot).run()
        finally:
            following.cancel()
            loading.cancel()
