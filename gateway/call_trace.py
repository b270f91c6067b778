"""A governed call as its trace sees it: who asked what (`Call`), its span (its id, the caller's
span as parent, [start, end] epoch ns of the call and of each step: bus/PROTOCOL.md, Timings),
the W3C trace context it hands its upstream, and the trace record written when it ends (and the
provisional one while it waits for approval: workers/tracer.py replaces it with the final one).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bus.client import PartialHandler
from bus.messages import trace_record
from gateway.outcome import Outcome, final_status
from gateway.tokens import token_fields
from observe.traceparent import TraceParent, new_span_id


@dataclass(slots=True)
class Call:
    agent: str
    tool: str  # the policy and trace name (a tool's canonical `<server>.<tool>` once resolved)
    params: dict[str, Any]
    session_id: str
    trace_id: str
    on_progress: PartialHandler | None = None
    callback_url: str | None = None
    provisional_at: str | None = None  # timestamp of the provisional trace (waiting for approval)
    span: dict[str, Any] = field(default_factory=dict)  # the trace record's `span`

    @staticmethod
    def new(
        agent: str,
        name: str,
        params: dict[str, Any],
        session_id: str = "",
        trace_id: str | None = None,
        on_progress: PartialHandler | None = None,
        callback_url: str | None = None,
        parent: TraceParent | None = None,
    ) -> Call:
        """The call's trace id: `trace_id`, else the caller's (`parent`), else a new one."""
        trace_id = trace_id or (parent.trace_id if parent is not None else uuid.uuid4().hex)
        if parent is not None and parent.trace_id != trace_id:
            parent = None  # X-Trace-Id chose another trace: the caller's span is not our parent
        return Call(
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

    def record(self, outcome: Outcome) -> dict[str, Any]:
        """The final trace record (the call's span ends now)."""
        self.span["end"] = time.time_ns()
        tokens = token_fields(self.tool, self.params, outcome.result) if outcome.forwarded else {}
        return self._record(
            outcome,
            policy=outcome.policy,
            status_code=outcome.status,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
            timestamp=self.provisional_at,
            approval_id=outcome.approval_id or None,
            approval_status=final_status(outcome.approval_status),
            approved_by=outcome.approved_by or None,
            approval_ms=outcome.approval_ms,
            supervisor_reasoning=outcome.reasoning,
            supervisor_confidence=outcome.confidence,
            after={**tokens, **(outcome.trace_extra or {})},
        )

    def provisional(self, outcome: Outcome, approval_id: str) -> dict[str, Any]:
        """The record of the call while it waits for approval, so `/traces` shows it; the final
        record keeps its place and time."""
        record = self._record(
            outcome,
            policy="human_approval",
            status_code=0,
            latency_ms=0,
            approval_id=approval_id,
            approval_status="pending",
        )
        self.provisional_at = record["timestamp"]
        return record

    def _record(
        self, outcome: Outcome, after: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        return trace_record(
            trace_id=outcome.trace_id,
            session_id=self.session_id,
            agent_id=self.agent,
            tool=self.tool,
            params=self.params,
            policy_rule=outcome.rule,
            **fields,
            policy_version=outcome.policy_version or None,
            span=self.span,
            **(after or {}),
        )


def _span(parent: TraceParent | None) -> dict[str, Any]:
    span: dict[str, Any] = {"id": new_span_id(), "start": time.time_ns()}
    if parent is not None:
        span["parent"] = parent.span_id
        span["flags"] = parent.flags
    return span
