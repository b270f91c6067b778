"""One governed tool call, the same for every front-end (REST, /mcp, stdio):
resolve the tool → `policy` → (deny | rate limit | approval | `upstream.<server>`) → trace.

A name that is no tool (404) is refused before it is a call and not traced, as in the Go
project. A call that waits for approval is traced twice with one trace_id: provisionally when it
starts waiting (visible in `/traces`), then final (workers/tracer.py replaces the first).

`ToolCallOutcome` carries what every front-end needs to answer: an HTTP-like status, the policy
verdict, the upstream result or a precise error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_mesh.config_sources import DISPATCH
from bus import frames
from bus.client import CONNECTION_LOST, BusClient, PartialHandler
from bus.errors import BusError, upstream_failure
from bus.json_values import refusal
from bus.messages import (
    APPROVAL,
    POLICY,
    PolicyCheck,
    ThenCall,
    ToolCall,
    trace_record,
    upstream_service,
)
from gateway.catalog import Catalog, ServerView
from gateway.tokens import token_fields
from gateway.trace_outbox import TraceOutbox
from observe.traceparent import TraceParent, new_span_id

POLICY_TIMEOUT = 5.0


@dataclass
class ToolCallOutcome:
    status: int
    policy: str  # allow | deny | human_approval | rate_limited | error
    trace_id: str
    latency_ms: float = 0.0
    result: Any = None
    error: str = ""
    rule: str = ""
    approval_id: str = ""
    approval_status: str = ""  # approved | denied | timeout (| pending: MCP non-blocking)
    approved_by: str = ""
    approval_ms: float | None = None
    reasoning: str | None = None
    confidence: float | None = None
    policy_version: str = ""  # content hash of the policy set that decided (empty: none did)
    forwarded: bool = False  # the upstream was called: the trace gets token counts
    traced: bool = True  # False: not a call (unknown tool), nothing recorded
    kind: str = "mcp"  # of the tool's source: a CLI or OpenAPI result shows plain over REST
    trace_extra: dict[str, Any] | None = None  # e.g. a CLI tool's exit_code

    def body(self) -> dict[str, Any]:
        """The REST response body (compat.md §3): empty fields omitted."""
        out: dict[str, Any] = {"trace_id": self.trace_id, "policy": self.policy,
                               "latency_ms": round(self.latency_ms)}
        for key in ("result", "error", "approval_id", "approval_status", "approved_by"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if "result" in out and self.kind != "mcp":
            out["result"] = plain_result(self.kind, self.result)
        return out

    def source_result(self, view: ServerView, result: Any) -> None:
        """The result of `view`'s tool: kept as the MCP result; what the trace records of it."""
        self.result, self.kind = result, view.kind
        structured = result.get("structuredContent") if isinstance(result, dict) else None
        if not isinstance(structured, dict) or view.kind == "mcp":
            return
        key, field = {"cli": ("exit_code", "exit_code"), "openapi": ("backend_status", "status")}[view.kind]
        if isinstance(structured.get(field), int):
            self.trace_extra = {key: structured[field]}

    def approved(self, approval: dict[str, Any]) -> None:
        """Record an approval's resolution on this outcome (for the response and the trace)."""
        self.approval_id = approval["id"]
        self.approval_status = approval["status"]
        self.approved_by = approval.get("resolved_by") or ""
        self.reasoning = approval.get("reasoning")
        self.confidence = approval.get("confidence")
        if approval.get("resolved_at"):
            self.approval_ms = round((approval["resolved_at"] - approval["created_at"]) * 1000, 1)


class Pipeline:
    def __init__(
        self, client: BusClient, catalog: Catalog, outbox: TraceOutbox, timeouts: dict[str, float],
        approval_timeout: float = 300.0, generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.client = client
        self.generation = generation  # of the policy set this front-end knows (PolicyCheck)
        self.catalog = catalog
        self.outbox = outbox
        self.timeouts = timeouts  # per upstream server, seconds
        self.approval_timeout = approval_timeout

    async def call_tool(
        self,
        agent: str,
        tool: str,
        params: dict[str, Any],
        *,
        session_id: str = "",
        trace_id: str | None = None,
        on_progress: PartialHandler | None = None,
        wait_for_approval: bool = True,
        callback_url: str | None = None,
        parent: TraceParent | None = None,
        params_name: str = "params",
    ) -> ToolCallOutcome:
        """The governed call. With `wait_for_approval=False` (MCP, supervisor mode off) a call that
        needs approval answers 202 with the approval id at once; `replay` runs it once approved.
        `parent`: the caller's W3C trace context; its trace id is the call's unless `trace_id`.
        Params the bus cannot carry unchanged are refused (400, untraced, like bad JSON in Go),
        their path named from `params_name` (what the front-end calls them)."""
        started = time.perf_counter()
        trace_id = trace_id or (parent.trace_id if parent is not None else uuid.uuid4().hex)
        if parent is not None and parent.trace_id != trace_id:
            parent = None  # X-Trace-Id chose another trace: the caller's span is not our parent
        call = _Call(agent, tool, params, session_id, trace_id, on_progress, callback_url, span=_span(parent))
        if (bad := refusal(params, params_name)) is not None:
            outcome = ToolCallOutcome(400, "error", call.trace_id, error=f"invalid {bad}", traced=False)
            return self._finish(call, outcome, started)
        try:
            outcome = await self._decide_and_call(call, wait_for_approval)
        except asyncio.CancelledError:  # the caller went away (MCP cancel, closed connection): trace it
            self._finish(call, ToolCallOutcome(499, "error", call.trace_id, error="cancelled by the client"), started)
            raise
        return self._finish(call, outcome, started)

    async def replay(self, approval: dict[str, Any], on_progress: PartialHandler | None = None) -> ToolCallOutcome:
        """Run an approved call (MCP `approval.resolve`): the approval is its authorisation."""
        started = time.perf_counter()
        call = _Call(approval["agent_id"], approval["tool"], approval["params"], approval["session_id"],
                     uuid.uuid4().hex, on_progress, None, span=_span(None))
        outcome = ToolCallOutcome(0, "human_approval", call.trace_id, rule=approval.get("policy_rule", ""))
        outcome.approved(approval)
        if approval["status"] != "approved":
            outcome.status, outcome.error = 403, f"approval {approval['id'][:8]} was {approval['status']}"
        else:
            outcome = await self._call_upstream(call, outcome)
        return self._finish(call, outcome, started)

    def _finish(self, call: _Call, outcome: ToolCallOutcome, started: float) -> ToolCallOutcome:
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if not outcome.traced:
            return outcome
        call.span["end"] = time.time_ns()
        tokens = token_fields(call.tool, call.params, outcome.result) if outcome.forwarded else {}
        self.outbox.add(trace_record(
            trace_id=outcome.trace_id, session_id=call.session_id, agent_id=call.agent, tool=call.tool,
            params=call.params, policy=outcome.policy, policy_rule=outcome.rule, status_code=outcome.status,
            latency_ms=outcome.latency_ms, error=outcome.error, timestamp=call.provisional_at,
            approval_id=outcome.approval_id or None,
            approval_status=_final_status(outcome.approval_status),
            approved_by=outcome.approved_by or None, approval_ms=outcome.approval_ms,
            supervisor_reasoning=outcome.reasoning, supervisor_confidence=outcome.confidence,
            policy_version=outcome.policy_version or None, span=call.span, **tokens, **(outcome.trace_extra or {}),
        ))
        return outcome

    def _provisional(self, call: _Call, outcome: ToolCallOutcome, approval_id: str) -> None:
        """The trace of a call now waiting for approval, so `/traces` shows it while it waits."""
        record = trace_record(
            trace_id=outcome.trace_id, session_id=call.session_id, agent_id=call.agent, tool=call.tool,
            params=call.params, policy="human_approval", policy_rule=outcome.rule, status_code=0,
            latency_ms=0, approval_id=approval_id, approval_status="pending",
            policy_version=outcome.policy_version or None, span=call.span)
        call.provisional_at = record["timestamp"]  # the final record keeps the call's place and time
        self.outbox.add(record)

    async def _decide_and_call(self, call: _Call, wait_for_approval: bool) -> ToolCallOutcome:
        def fail(status: int, policy: str, error: str, rule: str = "") -> ToolCallOutcome:
            return ToolCallOutcome(status, policy, call.trace_id, error=error, rule=rule)

        resolved = self.catalog.split(call.tool)
        if resolved is None:
            return _unknown(call, f"no upstream server named {call.tool.partition('.')[0]!r}")
        server, name = resolved
        dispatched = self.catalog.dispatched(server, name, call.params)
        if dispatched is not None:  # `<cli>.__dispatch {command}`: decided and traced as the command
            name, call.params = dispatched
            if not server.serves(name):
                return _unknown(call, f"{server.name}.{DISPATCH} needs a 'command' such as init or "
                                      "pr.list (letters, digits, '_', '-'; words joined by '.')")
        if server.up and not server.serves(name):
            return _unknown(call, f"{server.name} has no tool {name!r}")
        call.tool = server.canonical(name)  # policies and traces use the canonical name

        # An allowed call goes on from the policy worker straight to the upstream (FORWARD): the
        # answer is then the tool's result, with the decision in the reply's meta.
        timeout = self.timeouts.get(server.name, 60.0)
        check = PolicyCheck(agent=call.agent, tool=call.tool, params=call.params,
                            then=ThenCall(server=server.name, tool=name, timeout=timeout),
                            generation=self.generation())
        try:
            reply = await self.client.request(
                POLICY, check.dump(), timeout=POLICY_TIMEOUT + timeout + 1.0, key=call.agent,
                on_partial=call.on_progress, with_meta=True,
            )
        except BusError as exc:
            if exc.message == CONNECTION_LOST:  # sent, then lost: we cannot know how far it got
                return fail(503, "error", f"mesh bus unavailable: {exc.message} (the call may or may not "
                                          f"have reached {server.name})")
            if (allowed := exc.meta.get("policy")) is None:
                return fail(503, "error", f"policy service unavailable: {exc.message}")
            call.timed(exc.meta)
            outcome = ToolCallOutcome(0, "allow", call.trace_id, rule=allowed["rule"], forwarded=True,
                                      policy_version=allowed.get("version", ""))
            return _upstream_failed(outcome, server, exc)
        call.timed(reply.meta)
        if (allowed := reply.meta.get("policy")) is not None:
            outcome = ToolCallOutcome(200, "allow", call.trace_id, rule=allowed["rule"], forwarded=True,
                                      policy_version=allowed.get("version", ""))
            outcome.source_result(server, reply.body)
            return outcome
        decision = reply.body
        action, rule, reason = decision["action"], decision["rule"], decision["reason"]
        version = decision.get("version", "")
        if action == "rate_limited":
            outcome = fail(429, "rate_limited", reason, rule)
            outcome.policy_version = version
            return outcome
        if action == "deny":
            outcome = fail(403, "deny", f"denied by policy {rule}: {reason}", rule)
            outcome.policy_version = version
            return outcome
        outcome = ToolCallOutcome(0, action, call.trace_id, rule=rule, policy_version=version)
        if action == "human_approval":
            outcome = await self._approve(call, outcome, wait_for_approval)
            if outcome.status:
                return outcome  # denied, timed out, still pending, or the approval service failed
        return await self._call_upstream(call, outcome)

    async def _approve(self, call: _Call, outcome: ToolCallOutcome, wait: bool) -> ToolCallOutcome:
        """Grant → allow; memory → approved; else pending: wait for the resolution (REST, supervisor
        mode) or answer 202 with the id (MCP non-blocking). status 0 means: go on and call."""
        asked = time.time_ns()
        try:
            return await self._approval(call, outcome, wait)
        finally:
            call.span["approval"] = [asked, time.time_ns()]

    async def _approval(self, call: _Call, outcome: ToolCallOutcome, wait: bool) -> ToolCallOutcome:
        try:
            submitted = await self.client.request(APPROVAL, {
                "op": "submit", "agent": call.agent, "tool": call.tool, "params": call.params,
                "session_id": call.session_id, "trace_id": call.trace_id, "rule": outcome.rule,
                "callback_url": call.callback_url,
            }, timeout=POLICY_TIMEOUT)
        except BusError as exc:
            outcome.status, outcome.policy = 503, "error"
            outcome.error = f"approval service unavailable: {exc.message}"
            return outcome
        if submitted.get("grant_id"):  # a grant turns approval into allow
            outcome.policy, outcome.rule = "allow", f"grant:{submitted['grant_id']}"
            return outcome
        approval = submitted["approval"]
        if submitted["status"] == "pending":
            if not wait:
                outcome.status, outcome.approval_id, outcome.approval_status = 202, approval["id"], "pending"
                outcome.error = (f"approval required: approval {approval['id'][:8]} is pending until a human "
                                 f"resolves it (`mesh approve {approval['id'][:8]}`)")
                return outcome
            self._provisional(call, outcome, approval["id"])
            approval = await self._wait(approval)
        outcome.approved(approval)
        if approval["status"] != "approved":
            # Go's statuses: denied 403, no decision in time 408 (Request Timeout).
            outcome.status = {"denied": 403, "timeout": 408}.get(approval["status"], 503)
            what = {"denied": f"denied by {approval['resolved_by']}", "timeout": "timed out"}
            outcome.error = (f"approval {approval['id'][:8]} {what.get(approval['status'], approval['status'])}"
                             + (f": {approval['reasoning']}" if approval.get("reasoning") else ""))
        return outcome

    async def _wait(self, approval: dict[str, Any]) -> dict[str, Any]:
        """Park until resolved. The approval is durable: if the approval worker restarts while we
        wait, ask again until the approval's own deadline (plus slack) has passed."""
        deadline = time.monotonic() + self.approval_timeout + 10.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                result: dict[str, Any] = await self.client.request(
                    APPROVAL, {"op": "wait", "id": approval["id"]}, timeout=remaining)
                return result
            except BusError as exc:
                if exc.code not in (frames.WORKER_DIED, frames.UNAVAILABLE):
                    break
                await asyncio.sleep(0.2)
        return {**approval, "status": "unavailable", "resolved_by": None,
                "reasoning": "approval service unavailable while waiting"}

    async def _call_upstream(self, call: _Call, outcome: ToolCallOutcome) -> ToolCallOutcome:
        resolved = self.catalog.split(call.tool)
        assert resolved is not None
        server, name = resolved
        timeout = self.timeouts.get(server.name, 60.0)
        outcome.forwarded = True
        try:
            reply = await self.client.request(
                upstream_service(server.name),
                ToolCall(tool=name, arguments=call.params, timeout=timeout).dump(),
                timeout=timeout + 1.0,  # the worker's own timeout fires first, with a better message
                on_partial=call.on_progress, with_meta=True,
            )
        except BusError as exc:
            call.timed(exc.meta)
            return _upstream_failed(outcome, server, exc)
        call.timed(reply.meta)
        outcome.source_result(server, reply.body)
        outcome.status = 200
        return outcome


def plain_result(kind: str, result: Any) -> Any:
    """A CLI or OpenAPI tool's result as the Go project's REST API answers it: the CLI's
    `{stdout, stderr, exit_code}`, the backend's response body."""
    structured = result.get("structuredContent") if isinstance(result, dict) else None
    if not isinstance(structured, dict):
        return result
    return structured.get("body") if kind == "openapi" else structured


def _unknown(call: _Call, why: str) -> ToolCallOutcome:
    outcome = ToolCallOutcome(404, "error", call.trace_id, error=f"unknown tool {call.tool}: {why}")
    outcome.traced = False
    return outcome


def _upstream_failed(outcome: ToolCallOutcome, server: ServerView, exc: BusError) -> ToolCallOutcome:
    outcome.status, outcome.error = upstream_failure(server.name, exc, server.reason)
    return outcome


_FINAL: dict[str, Literal["approved", "denied", "timeout"]] = {
    "approved": "approved", "denied": "denied", "timeout": "timeout"}


def _final_status(status: str) -> Literal["approved", "denied", "timeout"] | None:
    return _FINAL.get(status)  # None for pending or unavailable: not a resolution


@dataclass(slots=True)
class _Call:
    agent: str
    tool: str
    params: dict[str, Any]
    session_id: str
    trace_id: str
    on_progress: PartialHandler | None
    callback_url: str | None
    provisional_at: str | None = None  # timestamp of the provisional trace (waiting for approval)
    # The trace record's `span`: this call's span id, its parent (the caller's, from traceparent),
    # and [start, end] epoch ns of the call and of each step (bus/PROTOCOL.md, Timings).
    span: dict[str, Any] = field(default_factory=dict)

    def timed(self, meta: dict[str, Any] | None) -> None:
        """Keep the step timings the workers sent with their answer."""
        for step in ("policy", "upstream"):
            timing = (meta or {}).get(f"{step}_ns")
            if isinstance(timing, list) and len(timing) == 2:
                self.span[step] = timing


def _span(parent: TraceParent | None) -> dict[str, Any]:
    span: dict[str, Any] = {"id": new_span_id(), "start": time.time_ns()}
    if parent is not None:
        span["parent"] = parent.span_id
        span["flags"] = parent.flags
    return span
