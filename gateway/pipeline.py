"""One governed request, the same for every front-end (REST, /mcp, stdio) and every kind (tool
call, resource read, prompt): `policy` → (deny | rate limit | approval | `upstream.<server>`) →
trace. `governed` is that path, given the request's policy name, its params and what to ask the
upstream once allowed (`UpstreamCall`); `call_tool` first resolves a tool name to that. Requests
that are not governed (lists, completion, subscriptions) use `ask`, the same upstream step.

A name that is no tool (404) is refused before it is a call and not traced, as in the Go
project. A call that waits for approval is traced twice with one trace_id: provisionally when it
starts waiting (visible in `/traces`), then final (workers/tracer.py replaces the first).

`Outcome` (gateway/call.py, with the call's data: `Call`, its span and trace record, and
`UpstreamCall`) carries what every front-end needs to answer: an HTTP-like status, the policy
verdict, the upstream result or a precise error. The approval step is gateway/approval_step.py.

A tool whose definition changed since it was pinned (gateway/pins.py) is held by its server's
`pinning.mode`: `block` refuses its calls before the policy (rule `pin:<tool>`), `approve`
makes an allowed call a human approval (policy/pinning.py `held_action`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypedDict, Unpack

from bus.client import CONNECTION_LOST, BusClient, PartialHandler
from bus.errors import BusError, unavailable_service, upstream_failure
from bus.json_values import refusal
from bus.messages import POLICY, ToolCall, UpstreamRequest, policy_check, upstream_service
from gateway.approval_step import ApprovalStep
from gateway.call import Call, Outcome, TraceParent, UpstreamCall
from gateway.catalog import Catalog, ServerView
from gateway.trace_outbox import TraceOutbox
from mesh_config.sources import DISPATCH
from policy.pinning import held_action

POLICY_TIMEOUT = 5.0


class How(TypedDict, total=False):
    """How a front-end asks for a governed request (every key optional)."""

    session_id: str
    trace_id: str | None  # else the caller's (`parent`), else a new one
    on_progress: PartialHandler | None  # the upstream's progress notifications, as they come
    # False (MCP, supervisor mode off): a call that needs approval answers 202 with its id at
    # once; `replay` runs it once approved
    wait_for_approval: bool
    callback_url: str | None  # POSTed the approval's result (X-Callback-URL)
    parent: TraceParent | None  # the caller's W3C trace context
    params_name: str  # what the front-end calls the params, for a refusal naming their path
    # True: the call's trace record is made when the front-end calls `trace(outcome)`, once it
    # has answered (REST: its few dozen microseconds are then not in the caller's latency)
    trace_after_answer: bool


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
        self.approve = ApprovalStep(client, approval_timeout, self._provisional)

    async def call_tool(
        self, agent: str, tool: str, params: dict[str, Any], **how: Unpack[How]
    ) -> Outcome:
        """The governed call of tool `<server>.<tool>` (see `governed`); a name that is no tool is
        a 404, untraced."""
        call = _new_call(agent, tool, params, how)
        return await self._traced(call, self._tool(call, how), how)

    async def governed(
        self,
        agent: str,
        name: str,
        params: dict[str, Any],
        upstream: UpstreamCall,
        **how: Unpack[How],
    ) -> Outcome:
        """The one governed path: decide `name` (the policy and trace name) for `agent` with
        `params`, then — allowed, granted or approved — ask `upstream`; traced in every case.
        Params the bus cannot carry unchanged are refused (400, untraced, like bad JSON in Go),
        their path named from `params_name`."""
        call = _new_call(agent, name, params, how)
        return await self._traced(
            call, self._govern(call, upstream, how.get("wait_for_approval", True)), how
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
        call = Call.new(agent, name, params, session_id)
        return self._finish(
            call, Outcome(status, "error", call.trace_id, error=error), time.perf_counter()
        )

    async def ask(
        self, upstream: UpstreamCall, on_progress: PartialHandler | None = None
    ) -> Outcome:
        """Ask an upstream what needs no decision (lists, completion, subscriptions): the same
        upstream step as a governed request's, not traced."""
        call = Call.new("", "", {}, trace_id="-", on_progress=on_progress)
        return await self._call_upstream(call, upstream, Outcome(0, "allow", "", traced=False))

    async def replay(
        self, approval: dict[str, Any], on_progress: PartialHandler | None = None
    ) -> Outcome:
        """Run an approved call (MCP `approval.resolve`): the approval is its authorisation."""
        started = time.perf_counter()
        call = Call.new(
            approval["agent_id"],
            approval["tool"],
            approval["params"],
            approval["session_id"],
            uuid.uuid4().hex,
            on_progress,
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

    async def _traced(self, call: Call, work: Coroutine[Any, Any, Outcome], how: How) -> Outcome:
        started = time.perf_counter()
        if (bad := refusal(call.params, how.get("params_name", "params"))) is not None:
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
        return self._finish(call, outcome, started, how.get("trace_after_answer", False))

    def _finish(self, call: Call, outcome: Outcome, started: float, later: bool = False) -> Outcome:
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        call.ended()
        if later and outcome.traced:
            outcome.untraced = call
        elif outcome.traced:
            self.outbox.add(call.record(outcome))
        return outcome

    def trace(self, outcome: Outcome) -> None:
        """Record the trace of a call made with `trace_after_answer` (once; nothing if it was
        traced already or is not a call)."""
        call, outcome.untraced = outcome.untraced, None
        if call is not None:
            self.outbox.add(call.record(outcome))

    def _provisional(self, call: Call, outcome: Outcome, approval_id: str) -> None:
        """The trace of a call now waiting for approval, so `/traces` shows it while it waits."""
        self.outbox.add(call.provisional(outcome, approval_id))

    def _resolve(self, call: Call) -> UpstreamCall | Outcome:
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
        # Built, not validated: every field is of its type here (the upstream worker validates).
        request = ToolCall.model_construct(
            tool=name, arguments=call.params, timeout=float(timeout), traceparent=call.traceparent()
        )
        return UpstreamCall(server, request)

    async def _tool(self, call: Call, how: How) -> Outcome:
        upstream = self._resolve(call)
        if isinstance(upstream, Outcome):
            return upstream
        return await self._govern(call, upstream, how.get("wait_for_approval", True))

    async def _govern(self, call: Call, upstream: UpstreamCall, wait_for_approval: bool) -> Outcome:
        def fail(
            status: int, policy: str, error: str, rule: str = "", version: str = ""
        ) -> Outcome:
            return Outcome(
                status, policy, call.trace_id, error=error, rule=rule, policy_version=version
            )

        # An allowed request goes on from the policy worker straight to the upstream (FORWARD): the
        # answer is then the upstream's, with the decision in the reply's meta.
        server = upstream.server
        pins = self.catalog.pins
        tool_call = isinstance(upstream.request, ToolCall)
        held = pins.hold(call.tool) if pins is not None and tool_call else None
        if held is not None and held.mode == "block":
            return fail(403, "deny", f"refused: {held.line()}", f"pin:{call.tool}")
        check = policy_check(
            agent=call.agent,
            tool=call.tool,
            params=call.params,
            then=upstream.then() if held is None else None,  # held: the gateway asks a human
            generation=self.generation(),
        )
        try:
            reply = await self.client.exchange(
                POLICY,
                check,
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
        if held is not None and held_action(held.mode, action) != action:
            action, rule = held_action(held.mode, action), f"pin:{call.tool}"
        if action == "rate_limited":
            return fail(429, "rate_limited", reason, rule, version)
        if action == "deny" and rule.startswith("freeze:"):  # the kill switch: reason says which
            return fail(403, "deny", reason, rule, version)
        if action == "deny":
            return fail(403, "deny", f"denied by policy {rule}: {reason}", rule, version)
        outcome = Outcome(200, action, call.trace_id, rule=rule, policy_version=version)
        if action == "human_approval":
            stopped = await self.approve(call, outcome, wait_for_approval, held is not None)
            if stopped is not None:
                return stopped
        return await self._call_upstream(call, upstream, outcome)

    async def _call_upstream(self, call: Call, upstream: UpstreamCall, outcome: Outcome) -> Outcome:
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


def _unknown(call: Call, why: str) -> Outcome:
    return Outcome(
        404, "error", call.trace_id, error=f"unknown tool {call.tool}: {why}", traced=False
    )


def _upstream_failed(outcome: Outcome, server: ServerView, exc: BusError) -> Outcome:
    outcome.status, outcome.error = upstream_failure(server.name, exc, server.reason)
    return outcome


def _new_call(agent: str, name: str, params: dict[str, Any], how: How) -> Call:
    return Call.new(
        agent,
        name,
        params,
        how.get("session_id", ""),
        how.get("trace_id"),
        how.get("on_progress"),
        how.get("callback_url"),
        how.get("parent"),
    )
