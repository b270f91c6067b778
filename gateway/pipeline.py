"""One governed tool call, the same for every front-end (REST, /mcp, stdio):
resolve the tool → `policy` → (deny | rate limit | approval | `upstream.<server>`) → trace.

`ToolCallOutcome` carries what every front-end needs to answer: an HTTP-like status, the policy
verdict, the upstream result or a precise error.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bus import frames
from bus.client import BusClient, PartialHandler
from bus.errors import BusError
from bus.messages import POLICY, PolicyCheck, ToolCall, TraceRecord, upstream_service
from gateway.catalog import Catalog
from gateway.trace_outbox import TraceOutbox

POLICY_TIMEOUT = 5.0

# Bus error code → what the caller sees when the upstream leg fails.
_UPSTREAM_STATUS = {
    frames.WORKER_DIED: 502,
    frames.UNAVAILABLE: 503,
    frames.TIMEOUT: 504,
    frames.NOT_FOUND: 404,
    frames.BAD_REQUEST: 400,
}


@dataclass
class ToolCallOutcome:
    status: int
    policy: str  # allow | deny | human_approval | rate_limited | error
    trace_id: str
    latency_ms: float
    result: Any = None
    error: str = ""
    rule: str = ""
    approval_id: str = ""

    def body(self) -> dict[str, Any]:
        """The REST response body (compat.md §3): empty fields omitted."""
        out: dict[str, Any] = {"trace_id": self.trace_id, "policy": self.policy, "latency_ms": self.latency_ms}
        if self.result is not None:
            out["result"] = self.result
        if self.error:
            out["error"] = self.error
        if self.approval_id:
            out["approval_id"] = self.approval_id
        return out


class Pipeline:
    def __init__(
        self, client: BusClient, catalog: Catalog, outbox: TraceOutbox, timeouts: dict[str, float]
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.outbox = outbox
        self.timeouts = timeouts  # per upstream server, seconds

    async def call_tool(
        self,
        agent: str,
        tool: str,
        params: dict[str, Any],
        *,
        session_id: str = "",
        trace_id: str | None = None,
        on_progress: PartialHandler | None = None,
    ) -> ToolCallOutcome:
        started = time.perf_counter()
        outcome = await self._decide_and_call(agent, tool, params, trace_id or uuid.uuid4().hex, on_progress)
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self.outbox.add(
            TraceRecord(
                trace_id=outcome.trace_id,
                session_id=session_id,
                agent_id=agent,
                tool=tool,
                params=params,
                policy=outcome.policy,
                policy_rule=outcome.rule,
                status_code=outcome.status,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                timestamp=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                approval_id=outcome.approval_id or None,
            )
        )
        return outcome

    async def _decide_and_call(
        self, agent: str, tool: str, params: dict[str, Any], trace_id: str, on_progress: PartialHandler | None
    ) -> ToolCallOutcome:
        def fail(status: int, policy: str, error: str, rule: str = "") -> ToolCallOutcome:
            return ToolCallOutcome(status, policy, trace_id, 0.0, error=error, rule=rule)

        resolved = self.catalog.split(tool)
        if resolved is None:
            return fail(404, "error", f"unknown tool {tool}: no upstream server named {tool.partition('.')[0]!r}")
        server, name = resolved
        if server.up and name not in server.tools:
            return fail(404, "error", f"unknown tool {tool}: {server.name} has no tool {name!r}")

        try:
            decision = await self.client.request(
                POLICY, PolicyCheck(agent=agent, tool=tool, params=params).dump(), timeout=POLICY_TIMEOUT, key=agent
            )
        except BusError as exc:
            return fail(503, "error", f"policy service unavailable: {exc.message}")
        action, rule, reason = decision["action"], decision["rule"], decision["reason"]
        if action == "rate_limited":
            return fail(429, "rate_limited", reason, rule)
        if action == "deny":
            return fail(403, "deny", f"denied by policy {rule}: {reason}", rule)
        if action == "human_approval":
            return fail(202, "human_approval", "approval required: human approval is not implemented yet", rule)

        timeout = self.timeouts.get(server.name, 60.0)
        try:
            result = await self.client.request(
                upstream_service(server.name),
                ToolCall(tool=name, arguments=params, timeout=timeout).dump(),
                timeout=timeout + 1.0,  # the worker's own timeout fires first, with a better message
                on_partial=on_progress,
            )
        except BusError as exc:
            status = _UPSTREAM_STATUS.get(exc.code, 502)
            message = exc.message
            if exc.code in (frames.WORKER_DIED, frames.UNAVAILABLE):
                message = f"upstream unavailable: {server.name} ({exc.message})"
            return ToolCallOutcome(status, "allow", trace_id, 0.0, error=message, rule=rule)
        return ToolCallOutcome(200, "allow", trace_id, 0.0, result=result, rule=rule)
