"""One governed request, the same for every front-end (REST, /mcp, stdio) and every kind (tool
call, resource read, prompt): `policy` → (deny | rate limit | approval | `upstream.<server>`) →
trace. `governed` is that path, given the request's policy name, its params and what to ask the
upstream once allowed (`UpstreamCall`); `call_tool` first resolves a tool name to that. Requests
that are not governed (lists, completion, subscriptions) use `ask`, the same upstream step.

A name that is no tool (404) is refused before it is a call and not traced, as in the Go
project. A call that waits for approval is traced twice with one trace_id: provisionally when it
starts waiting (visible in `/traces`), then final (workers/tracer.py replaces the first).

`Outcome` (gateway/outcome.py) carries what every front-end needs to answer: an HTTP-like
status, the policy verdict, the upstream result or a precise error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bus import frames
from bus.client import CONNECTION_LOST, BusClient, PartialHandler
from bus.errors import BusError, unavailable_service, upstream_failure
from bus.json_values import refusal
from bus.messages import (
    APPROVAL,
    POLICY,
    ApprovalSubmit,
    ApprovalWait,
    PolicyCheck,
    ToolCall,
    UpstreamRequest,
    trace_record,
    upstream_service,
)
from gateway.catalog import Catalog, ServerView
from gateway.outcome import Outcome, final_status
from gateway.tokens import token_fields
from gateway.trace_outbox import TraceOutbox
from gateway.upstream_call import UpstreamCall
from mesh_config.sources import DISPATCH
from observe.traceparent import TraceParent, new_span_id

POLICY_TIMEOUT = 5.0


class Pipeline:
    def __init__(
        self,
        client: BusClient,
        catalog: Catalog,
        outbox: TraceOutbox,
        timeouts: dict[str, float],
        approval_timeout: float = 300.0,
        generation: Callable[[], int] = lambda: 0,
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
    ) -> Outcome:
        """The governed call of tool `<server>.<tool>` (see `governed`; a name that is no tool is
        a 404, untraced). With `wait_for_approval=False` (MCP, supervisor mode off) a call that
        needs approval answers 202 with the approval id at once; `replay` runs it once approved."""
        call = _Call.new(
            agent, tool, params, session_id, trace_id, on_progress, callback_url, parent
        )
        return await self._traced(call, self._tool(call, wait_for_approval), params_name)

    async def governed(
        self,
        agent: str,
        name: str,
        params: dict[str, Any],
        upstream: UpstreamCall,
        *,
        session_id: str = "",
        trace_id: str | None = None,
        on_progress: PartialHandler | None = None,
        wait_for_approval: bool = True,
        callback_url: str | None = None,
        parent: TraceParent | None = None,
        params_name: str = "params",
    ) -> Outcome:
        """The one governed path: decide `name` (the policy and trace name) for `agent` with
        `params`, then — allowed, granted or approved — ask `upstream`; traced in every case.
        `parent`: the caller's W3C trace context; its trace id is the call's unless `trace_id`.
        Params the bus cannot carry unchanged are refused (400, untraced, like bad JSON in Go),
        their path named from `params_name` (what the front-end calls them)."""
        call = _Call.new(
            agent, name, params, session_id, trace_id, on_progress, callback_url, parent
        )
        return await self._traced(
            call, self._govern(call, upstream, wait_for_approval), params_name
        )

    def upstream_call(
        self, server: str, request: ToolCall | UpstreamRequest
    ) -> UpstreamCall | None:
        """What to ask `server` (None: no such server), with the server's timeout."""
        view = self.catalog.servers.get(server)
        if view is None:
            return None
        request.timeout = self.timeouts.get(server, 60.0)
        return UpstreamCall(view, request)

    def refused(
        self,
        agent: str,
        session_id: str,
        name: str,
        params: dict[str, Any],
        status: int,
        error: str,
    ) -> Outcome:
        """Trace a request refused before it could be decided (a resource no upstream has)."""
        call = _Call.new(agent, name, params, session_id, None, None, None, None)
        return self._finish(
            call, Outcome(status, "error", call.trace_id, error=error), time.perf_counter()
        )

    async def ask(
        self, upstream: UpstreamCall, on_progress: PartialHandler | None = None
    ) -> Outcome:
        """Ask an upstream what needs no decision (lists, completion, subscriptions): the same
        upstream step as a governed request's, not traced."""
        call = _Call.new("", "", {}, "", "-", on_progress, None, None)
        return await self._call_upstream(call, upstream, Outcome(0, "allow", "", traced=False))

    async def replay(
        self, approval: dict[str, Any], on_progress: PartialHandler | None = None
    ) -> Outcome:
        """Run an approved call (MCP `approval.resolve`): the approval is its authorisation."""
        started = time.perf_counter()
        call = _Call(
            approval["agent_id"],
            approval["tool"],
            approval["params"],
            approval["session_id"],
            uuid.uuid4().hex,
            on_progress,
            None,
            span=_span(None),
        )
        outcome = Outcome(
            403, "human_approval", call.trace_id, rule=approval.get("policy_rule", "")
        )
        outcome.approved(approval)
        upstream = self._resolve(call)
        if approval["status"] != "approved":
            outcome.error = f"approval {approval['id'][:8]} was {approval['status']}"
        elif isinstance(upstream, Outcome):
            outcome.status, outcome.error = upstream.status, upstream.error
        else:
            outcome = await self._call_upstream(call, upstream, outcome)
        return self._finish(call, outcome, started)

    async def _traced(
        self, call: _Call, work: Coroutine[Any, Any, Outcome], params_name: str
    ) -> Outcome:
        started = time.perf_counter()
        if (bad := refusal(call.params, params_name)) is not None:
            work.close()
            outcome = Outcome(400, "error", call.trace_id, error=f"invalid {bad}", traced=False)
            return self._finish(call, outcome, started)
        try:
            outcome = await work
        except (
            asyncio.CancelledError
        ):  # the caller went away (MCP cancel, closed connection): trace it
            self._finish(
                call, Outcome(499, "error", call.trace_id, error="cancelled by the client"), started
            )
            raise
        return self._finish(call, outcome, started)

    def _finish(self, call: _Call, outcome: Outcome, started: float) -> Outcome:
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if not outcome.traced:
            return outcome
        call.span["end"] = time.time_ns()
        tokens = token_fields(call.tool, call.params, outcome.result) if outcome.forwarded else {}
        self.outbox.add(
            trace_record(
                trace_id=outcome.trace_id,
                session_id=call.session_id,
                agent_id=call.agent,
                tool=call.tool,
                params=call.params,
                policy=outcome.policy,
                policy_rule=outcome.rule,
                status_code=outcome.status,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                timestamp=call.provisional_at,
                approval_id=outcome.approval_id or None,
                approval_status=final_status(outcome.approval_status),
                approved_by=outcome.approved_by or None,
                approval_ms=outcome.approval_ms,
                supervisor_reasoning=outcome.reasoning,
                supervisor_confidence=outcome.confidence,
                policy_version=outcome.policy_version or None,
                span=call.span,
                **tokens,
                **(outcome.trace_extra or {}),
            )
        )
        return outcome

    def _provisional(self, call: _Call, outcome: Outcome, approval_id: str) -> None:
        """The trace of a call now waiting for approval, so `/traces` shows it while it waits."""
        record = trace_record(
            trace_id=outcome.trace_id,
            session_id=call.session_id,
            agent_id=call.agent,
            tool=call.tool,
            params=call.params,
            policy="human_approval",
            policy_rule=outcome.rule,
            status_code=0,
            latency_ms=0,
            approval_id=approval_id,
            approval_status="pending",
            policy_version=outcome.policy_version or None,
            span=call.span,
        )
        call.provisional_at = record[
            "timestamp"
        ]  # the final record keeps the call's place and time
        self.outbox.add(record)

    def _resolve(self, call: _Call) -> UpstreamCall | Outcome:
        """The tool `call` names, as what to ask its upstream; a 404 outcome if it is no tool.
        Sets the call's canonical name (policies and traces use it) and, for `<cli>.__dispatch`,
        the command's params."""
        resolved = self.catalog.split(call.tool)
        if resolved is None:
            return _unknown(call, f"no upstream server named {call.tool.partition('.')[0]!r}")
        server, name = resolved
        dispatched = self.catalog.dispatched(server, name, call.params)
        if (
            dispatched is not None
        ):  # `<cli>.__dispatch {command}`: decided and traced as the command
            name, call.params = dispatched
            if not server.serves(name):
                return _unknown(
                    call,
                    f"{server.name}.{DISPATCH} needs a 'command' such as init or "
                    "pr.list (letters, digits, '_', '-'; words joined by '.')",
                )
        if server.up and not server.serves(name):
            return _unknown(call, f"{server.name} has no tool {name!r}")
        call.tool = server.canonical(name)
        timeout = self.timeouts.get(server.name, 60.0)
        return UpstreamCall(
            server,
            ToolCall(
                tool=name, arguments=call.params, timeout=timeout, traceparent=call.traceparent()
            ),
        )

    async def _tool(self, call: _Call, wait_for_approval: bool) -> Outcome:
        upstream = self._resolve(call)
        if isinstance(upstream, Outcome):
            return upstream
        return await self._govern(call, upstream, wait_for_approval)

    async def _govern(
        self, call: _Call, upstream: UpstreamCall, wait_for_approval: bool
    ) -> Outcome:
        def fail(
            status: int, policy: str, error: str, rule: str = "", version: str = ""
        ) -> Outcome:
            return Outcome(
                status, policy, call.trace_id, error=error, rule=rule, policy_version=version
            )

        # An allowed request goes on from the policy worker straight to the upstream (FORWARD): the
        # answer is then the upstream's, with the decision in the reply's meta.
        server = upstream.server
        check = PolicyCheck(
            agent=call.agent,
            tool=call.tool,
            params=call.params,
            then=upstream.then(),
            generation=self.generation(),
        )
        try:
            reply = await self.client.exchange(
                POLICY,
                check.dump(),
                timeout=POLICY_TIMEOUT + upstream.timeout + 1.0,
                key=call.agent,
                on_partial=call.on_progress,
            )
        except BusError as exc:
            if exc.message == CONNECTION_LOST:  # sent, then lost: we cannot know how far it got
                return fail(
                    503,
                    "error",
                    f"mesh bus unavailable: {exc.message} (the call may or may not "
                    f"have reached {server.name})",
                )
            if (allowed := exc.meta.get("policy")) is None:
                return fail(503, "error", unavailable_service("policy service", exc))
            call.timed(exc.meta)
            outcome = Outcome(
                502,
                "allow",
                call.trace_id,
                rule=allowed["rule"],
                forwarded=True,
                policy_version=allowed.get("version", ""),
            )
            return _upstream_failed(outcome, server, exc)
        call.timed(reply.meta)
        if (allowed := reply.meta.get("policy")) is not None:
            outcome = Outcome(
                200,
                "allow",
                call.trace_id,
                rule=allowed["rule"],
                forwarded=True,
                policy_version=allowed.get("version", ""),
            )
            upstream.read(outcome, reply.body)
            return outcome
        decision = reply.body
        action, rule, reason = decision["action"], decision["rule"], decision["reason"]
        version = decision.get("version", "")
        if action == "rate_limited":
            return fail(429, "rate_limited", reason, rule, version)
        if action == "deny":
            return fail(403, "deny", f"denied by policy {rule}: {reason}", rule, version)
        outcome = Outcome(200, action, call.trace_id, rule=rule, policy_version=version)
        if action == "human_approval":
            stopped = await self._approve(call, outcome, wait_for_approval)
            if stopped is not None:
                return stopped
        return await self._call_upstream(call, upstream, outcome)

    async def _approve(self, call: _Call, outcome: Outcome, wait: bool) -> Outcome | None:
        """Grant → allow; memory → approved; else pending: wait for the resolution (REST, supervisor
        mode) or answer 202 with the id (MCP non-blocking). None: approved, go on and call;
        else the outcome to answer (denied, timed out, pending, or the approval service failed)."""
        asked = time.time_ns()
        try:
            return await self._approval(call, outcome, wait)
        finally:
            call.span["approval"] = [asked, time.time_ns()]

    async def _approval(self, call: _Call, outcome: Outcome, wait: bool) -> Outcome | None:
        try:
            submit = ApprovalSubmit(
                agent=call.agent,
                tool=call.tool,
                params=call.params,
                session_id=call.session_id,
                trace_id=call.trace_id,
                rule=outcome.rule,
                callback_url=call.callback_url,
            )
            submitted = await self.client.request(APPROVAL, submit.dump(), timeout=POLICY_TIMEOUT)
        except BusError as exc:
            outcome.status, outcome.policy = 503, "error"
            outcome.error = unavailable_service("approval service", exc)
            return outcome
        if submitted.get("grant_id"):  # a grant turns approval into allow
            outcome.policy, outcome.rule = "allow", f"grant:{submitted['grant_id']}"
            return None
        approval = submitted["approval"]
        if submitted["status"] == "pending":
            if not wait:
                outcome.status, outcome.approval_id, outcome.approval_status = (
                    202,
                    approval["id"],
                    "pending",
                )
                outcome.error = (
                    f"approval required: approval {approval['id'][:8]} is pending until a human "
                    f"resolves it (`mesh approve {approval['id'][:8]}`)"
                )
                return outcome
            self._provisional(call, outcome, approval["id"])
            approval = await self._wait(approval)
        outcome.approved(approval)
        if approval["status"] == "approved":
            return None
        # Go's statuses: denied 403, no decision in time 408 (Request Timeout).
        outcome.status = {"denied": 403, "timeout": 408}.get(approval["status"], 503)
        what = {"denied": f"denied by {approval['resolved_by']}", "timeout": "timed out"}
        outcome.error = (
            f"approval {approval['id'][:8]} {what.get(approval['status'], approval['status'])}"
            + (f": {approval['reasoning']}" if approval.get("reasoning") else "")
        )
        return outcome

    async def _wait(self, approval: dict[str, Any]) -> dict[str, Any]:
        """Park until resolved. The approval is durable: if the approval worker restarts while we
        wait, ask again until the approval's own deadline (plus slack) has passed."""
        deadline = time.monotonic() + self.approval_timeout + 10.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                result: dict[str, Any] = await self.client.request(
                    APPROVAL, ApprovalWait(id=approval["id"]).dump(), timeout=remaining
                )
                return result
            except BusError as exc:
                if exc.code not in (frames.WORKER_DIED, frames.UNAVAILABLE):
                    break
                await asyncio.sleep(0.2)
        return {
            **approval,
            "status": "unavailable",
            "resolved_by": None,
            "reasoning": "approval service unavailable while waiting",
        }

    async def _call_upstream(
        self, call: _Call, upstream: UpstreamCall, outcome: Outcome
    ) -> Outcome:
        outcome.forwarded = True
        try:
            reply = await self.client.exchange(
                upstream_service(upstream.server.name),
                upstream.request.dump(),
                timeout=upstream.timeout
                + 1.0,  # the worker's own timeout fires first, with a better message
                on_partial=call.on_progress,
            )
        except BusError as exc:
            call.timed(exc.meta)
            return _upstream_failed(outcome, upstream.server, exc)
        call.timed(reply.meta)
        upstream.read(outcome, reply.body)
        return outcome


def _unknown(call: _Call, why: str) -> Outcome:
    return Outcome(
        404, "error", call.trace_id, error=f"unknown tool {call.tool}: {why}", traced=False
    )


def _upstream_failed(outcome: Outcome, server: ServerView, exc: BusError) -> Outcome:
    outcome.status, outcome.error = upstream_failure(server.name, exc, server.reason)
    return outcome


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

    @staticmethod
    def new(
        agent: str,
        name: str,
        params: dict[str, Any],
        session_id: str,
        trace_id: str | None,
        on_progress: PartialHandler | None,
        callback_url: str | None,
        parent: TraceParent | None,
    ) -> _Call:
        trace_id = trace_id or (parent.trace_id if parent is not None else uuid.uuid4().hex)
        if parent is not None and parent.trace_id != trace_id:
            parent = None  # X-Trace-Id chose another trace: the caller's span is not our parent
        return _Call(
            agent, name, params, session_id, trace_id, on_progress, callback_url, span=_span(parent)
        )

    def traceparent(self) -> str | None:
        """The call's W3C trace context for the upstream (its span the parent), when the trace
        id is one W3C can carry (32 hex digits; an X-Trace-Id may be anything)."""
        trace, span = self.trace_id.lower(), self.span.get("id")
        if len(trace) != 32 or trace.strip("0123456789abcdef") or trace == "0" * 32 or not span:
            return None
        return f"00-{trace}-{span}-01"

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
