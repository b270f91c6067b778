"""One governed call's data, whatever its kind (a tool call, a resource read, a prompt) and its
front-end; gateway/pipeline.py is what happens to it.

- `Call`: who asks what, and its trace context: the caller's W3C `traceparent` (an HTTP header,
  or MCP `params._meta.traceparent`; https://www.w3.org/TR/trace-context/) makes the call's span
  a child of the caller's; the call hands its own on to the upstream. Its span holds [start,
  end] epoch ns of the call and of each step (bus/PROTOCOL.md, Timings); its trace record is
  written when it ends, and provisionally while it waits for approval (workers/tracer.py
  replaces the provisional one).
- `UpstreamCall`: what it asks its upstream once allowed — a tool call (`ToolCall`: the answer
  is the CallToolResult) or another MCP request passed through (`UpstreamRequest`: `{"result"}`
  or the upstream's own `{"error"}`), bus/messages.py — and how the answer is read.
- `Outcome`: how it ended, what every front-end answers from and the trace records. `status`
  is HTTP-like (200 served; 202 waiting for approval; 4xx/5xx refused or failed, the codes of
  bus/errors.py's table); `policy` the verdict (allow | deny | human_approval | rate_limited |
  error). An upstream's own JSON-RPC error to a passed-through request keeps its code and data
  (`rpc_code`, `rpc_data`) for the MCP front-end.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from bus.client import PartialHandler
from bus.errors import RPC_INTERNAL_ERROR, status_of_rpc_code
from bus.messages import ToolCall, UpstreamRequest, then_call, trace_record
from gateway.catalog import ServerView
from gateway.tokens import token_fields

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the caller's span, the parent of the mesh's call span
    flags: str = "01"


def _hex(value: str, size: int) -> bool:
    return len(value) == size and set(value) <= _HEX and value != "0" * size


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parent a `traceparent` value names; None when absent or malformed (the spec says to
    ignore a malformed one and start a new trace)."""
    if not value:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or not set(parts[0]) <= _HEX:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    trace_id, span_id, flags = parts[1], parts[2], parts[3]
    if not (_hex(trace_id, 32) and _hex(span_id, 16) and len(flags) == 2 and set(flags) <= _HEX):
        return None
    return TraceParent(trace_id, span_id, flags)


def new_span_id() -> str:
    return os.urandom(8).hex()


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

    def ended(self) -> None:
        """The call's span ends now (its final record may be made later)."""
        self.span["end"] = time.time_ns()

    def record(self, outcome: Outcome) -> dict[str, Any]:
        """The final trace record (the call's span ends now, if it has not ended)."""
        if "end" not in self.span:
            self.ended()
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


@dataclass
class Outcome:
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
    rpc_code: int | None = None  # the upstream's own JSON-RPC error code (passed-through requests)
    rpc_data: Any = None
    # A call whose trace record is still to be made (Pipeline.trace).
    untraced: Call | None = field(default=None, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        """The REST response body (compat.md §3): empty fields omitted."""
        out: dict[str, Any] = {
            "trace_id": self.trace_id,
            "policy": self.policy,
            "latency_ms": round(self.latency_ms),
        }
        for key in ("result", "error", "approval_id", "approval_status", "approved_by"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if "result" in out and self.kind != "mcp":
            out["result"] = plain_result(self.kind, self.result)
        return out

    @property
    def refused_by_policy(self) -> bool:
        """Denied, rate limited, or its approval not given: denied, timed out, still pending (as
        opposed to failed: an approval service that did not answer is a 503, not a refusal)."""
        return self.policy in ("deny", "rate_limited", "human_approval") and self.status in (
            202,
            403,
            408,
            429,
        )

    def source_result(self, view: ServerView, result: Any) -> None:
        """The result of `view`'s tool: kept as the MCP result; what the trace records of it."""
        self.result, self.kind = result, view.kind
        structured = result.get("structuredContent") if isinstance(result, dict) else None
        if not isinstance(structured, dict) or view.kind == "mcp":
            return
        key, field = {"cli": ("exit_code", "exit_code"), "openapi": ("backend_status", "status")}[
            view.kind
        ]
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


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    server: ServerView
    request: ToolCall | UpstreamRequest  # its `timeout` set: the server's

    @property
    def timeout(self) -> float:
        return self.request.timeout or 60.0

    def then(self) -> dict[str, Any]:
        """The policy check's `then` (a `ThenCall` map): what the policy worker forwards if it
        allows the request."""
        if isinstance(self.request, ToolCall):
            return then_call(
                server=self.server.name,
                tool=self.request.tool,
                timeout=self.timeout,
                traceparent=self.request.traceparent,
            )
        return then_call(
            server=self.server.name, tool="", timeout=self.timeout, request=self.request.dump()
        )

    def read(self, outcome: Outcome, body: Any) -> None:
        """Put the upstream's answer on `outcome`: its result (200) or its own error."""
        if isinstance(self.request, ToolCall):
            outcome.source_result(self.server, body)
            outcome.status = 200
            return
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error["code"] if isinstance(error.get("code"), int) else RPC_INTERNAL_ERROR
            outcome.status, outcome.rpc_code = status_of_rpc_code(code), code
            outcome.error, outcome.rpc_data = str(error.get("message", "")), error.get("data")
        elif not isinstance(body, dict) or not isinstance(body.get("result"), dict):
            outcome.status, outcome.error = 502, f"upstream {self.server.name}: malformed reply"
        else:
            outcome.status, outcome.result = 200, body["result"]


def plain_result(kind: str, result: Any) -> Any:
    """A CLI or OpenAPI tool's result as the Go project's REST API answers it: the CLI's
    `{stdout, stderr, exit_code}`, the backend's response body."""
    structured = result.get("structuredContent") if isinstance(result, dict) else None
    if not isinstance(structured, dict):
        return result
    return structured.get("body") if kind == "openapi" else structured


_FINAL: dict[str, Literal["approved", "denied", "timeout"]] = {
    "approved": "approved",
    "denied": "denied",
    "timeout": "timeout",
}


def final_status(status: str) -> Literal["approved", "denied", "timeout"] | None:
    return _FINAL.get(status)  # None for pending or unavailable: not a resolution
