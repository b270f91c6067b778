"""Stand-ins for the gateway tests: a bus answered in this process (no ZeroMQ), and the governed
path (gateway/pipeline.py) on it with a real policy engine and approval service (`Governed`).
The `governed` fixture (tests/gateway/conftest.py) gives one on a fresh store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bus.client import BusClient, PartialHandler, Reply
from bus.errors import BusError, received
from bus.messages import APPROVAL, POLICY, PolicyCheck, ToolCall, upstream_service
from bus.worker import Request
from gateway.call import Outcome
from gateway.catalog import Catalog
from gateway.pipeline import Pipeline
from gateway.trace_outbox import TraceOutbox
from mesh_config.model import Config
from policy.engine import PolicyEngine
from policy.model import Policy
from workers.approval import ApprovalService
from workers.approval_store import StateStore

Upstream = Callable[[dict[str, Any], PartialHandler | None], Awaitable[Any]]

POLICIES = [
    Policy.model_validate(
        {
            "name": "claude",
            "agent": "claude",
            "rate_limit": {"max_per_minute": 3},
            "rules": [
                {"tools": ["fs.read_*"], "action": "allow"},
                {"tools": ["fs.write_file"], "action": "human_approval"},
                {"tools": ["fs.*"], "action": "deny"},
            ],
        }
    )
]
RESULT = {"content": [{"type": "text", "text": "hello"}], "isError": False}


async def _answers(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
    return RESULT


class FakeBus(BusClient):
    """A bus client never connected: `exchange` is answered here (`reply_to`; this one knows no
    services and answers `{}`). Every request is kept in `sent` (service, body, timeout)."""

    def __init__(self) -> None:
        super().__init__("inproc://gateway-test")  # never connected
        self.sent: list[tuple[str, Any, float]] = []

    def to(self, service: str) -> list[Any]:
        return [body for s, body, _ in self.sent if s == service]

    async def exchange(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Reply:
        self.sent.append((service, body, timeout))
        return await self.reply_to(service, body, on_partial)

    async def reply_to(self, service: str, body: Any, on_partial: PartialHandler | None) -> Reply:
        return Reply({}, {})


class _Request:
    def __init__(self, body: Any) -> None:
        self.body = body  # what the approval service reads of a bus request


class GovernedBus(FakeBus):
    """`policy` answered by the engine, `approval` by the service, `upstream.fs` by `upstream`.
    `down` services answer UNAVAILABLE, as the broker does for a service with no worker."""

    def __init__(self, approvals: ApprovalService) -> None:
        super().__init__()
        self.engine = PolicyEngine(POLICIES)
        self.approvals = approvals
        self.upstream: Upstream = _answers
        self.down: dict[str, BusError] = {}

    async def reply_to(self, service: str, body: Any, on_partial: PartialHandler | None) -> Reply:
        if service in self.down:
            raise self.down[service]
        if service == POLICY:
            return await self._policy(PolicyCheck.model_validate(body), on_partial)
        if service == APPROVAL:
            request: Request = _Request(body)  # type: ignore[assignment]
            return Reply(await self.approvals.handle(request), {})
        assert service == upstream_service("fs"), service
        return Reply(await self.upstream(body, on_partial), {"upstream_ns": [1, 2]})

    async def _policy(self, check: PolicyCheck, on_partial: PartialHandler | None) -> Reply:
        decision = self.engine.evaluate(check.agent, check.tool, check.params, time.monotonic())
        decided = {**decision.model_dump(), "version": "v1"}
        if check.then is None or decided["action"] != "allow":
            return Reply(decided, {"policy_ns": [1, 2]})
        # FORWARD: the upstream's answer (or error) comes back with the decision in its meta
        then = check.then
        forwarded = (
            then.request.model_copy(update={"timeout": then.timeout}).dump()
            if then.request is not None
            else ToolCall(tool=then.tool, arguments=check.params, timeout=then.timeout).dump()
        )
        meta = {"policy": decided, "policy_ns": [1, 2]}
        self.sent.append((upstream_service(then.server), forwarded, then.timeout))
        try:
            return Reply(await self.upstream(forwarded, on_partial), meta)
        except BusError as exc:
            raise received(exc.code, exc.message, {**exc.meta, **meta}) from None


class Traces(TraceOutbox):
    """The outbox, keeping what the pipeline hands it (no trace worker here)."""

    def __init__(self, client: BusClient) -> None:
        super().__init__(client)
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class Governed:
    """The governed path on a GovernedBus, with the approval service on its own store."""

    def __init__(self, tmp_path: Path) -> None:
        self.approvals = ApprovalService(StateStore(tmp_path / "state.db"), Config())
        self.bus = GovernedBus(self.approvals)
        self.catalog = Catalog(self.bus, ["fs"])
        self.catalog.servers["fs"].workers = [{"pid": 1}]  # up
        self.traces = Traces(self.bus)
        self.pipeline = Pipeline(self.bus, self.catalog, self.traces, {"fs": 7.0})

    async def call(self, tool: str, agent: str = "claude", **kw: Any) -> Outcome:
        upstream = self.pipeline.upstream_call("fs", ToolCall(tool=tool, arguments={"p": 1}))
        assert upstream is not None
        return await self.pipeline.governed(agent, f"fs.{tool}", {"p": 1}, upstream, **kw)

    async def pending(self) -> str:
        """The id of the approval a call is waiting on (waited for, with a deadline)."""
        deadline = time.monotonic() + 5
        while not self.approvals.waiters:
            assert time.monotonic() < deadline, "no call is waiting for approval"
            await asyncio.sleep(0.001)
        (approval_id,) = self.approvals.waiters
        return approval_id
