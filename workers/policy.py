"""Policy worker: answers `policy` requests with a decision from the pure engine.

The broker routes by agent id (affinity), so one worker owns each agent's rate-limit window and
loop-detection history: limits stay exact with N workers.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from bus.errors import bad_request
from bus.messages import POLICY, PolicyCheck, ToolCall, upstream_service
from bus.worker import BusWorker, Request
from policy.engine import PolicyEngine
from policy.model import Policy


class PolicyService:
    def __init__(self, policies: list[Policy]) -> None:
        self.engine = PolicyEngine(policies)

    async def handle(self, request: Request) -> Any:
        try:
            check = PolicyCheck.model_validate(request.body)
        except ValidationError as exc:
            raise bad_request(f"policy: invalid request: {exc.errors()[0]['msg']}") from None
        # Monotonic: a wall-clock step (NTP, or set by hand) must not reopen a window.
        now = time.monotonic()
        decision = self.engine.evaluate(check.agent, check.tool, check.params, now).model_dump()
        then = check.then
        if then is not None and decision["action"] == "allow":
            call = ToolCall(tool=then.tool, arguments=check.params, timeout=then.timeout)
            request.forward(upstream_service(then.server), call.dump(), meta={"policy": decision})
            return None
        return decision


async def run(endpoint: str, policies: list[Policy], slot: str) -> None:
    service = PolicyService(policies)
    # Decisions are pure CPU and quick: many may be queued here, they run one after another.
    await BusWorker(endpoint, POLICY, service.handle, capacity=256, slot=slot).run()
