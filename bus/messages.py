"""Typed bodies of every request, reply and event on the bus (see bus/PROTOCOL.md).

Bodies travel as msgpack maps. Senders build them with `.dump()` (trace records, made on every
call, with `trace_record`: the same map without the model); receivers validate them at the edge
with `Model.model_validate(body)` so a confused peer gets a 400, never a crash. The approval
service's operations are in bus/approval_messages.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus import frames

# Service names.
POLICY = "policy"
TRACES = "traces"
APPROVAL = "approval"  # one message per operation: `ApprovalOp`, bus/approval_messages.py
POLICYSET = "policyset"  # the current policy set, served by the gateway's reloader (PolicySetQuery)
POLICY_SET_CHANGED = (
    "policy.set.changed"  # event: {generation, version}, after each accepted reload
)
UPSTREAM_PREFIX = frames.UPSTREAM_PREFIX
UPSTREAM_STATE_PREFIX = frames.UPSTREAM_STATE_PREFIX


def upstream_service(server: str) -> str:
    return UPSTREAM_PREFIX + server


def upstream_state_service(server: str) -> str:
    """Where every upstream worker process registers for its whole life, its lifecycle state as
    its metadata (`UpstreamState`): never routed a tool call."""
    return UPSTREAM_STATE_PREFIX + server


def upstream_state_topic(server: str, state: str) -> str:
    """The event an upstream worker publishes on each transition: `upstream.<server>.<state>`."""
    return f"{UPSTREAM_PREFIX}{server}.{state}"


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# -- policy ------------------------------------------------------------------------------------


class ThenCall(Body):
    """The upstream call a policy check asks to be made at once if the decision is `allow`."""

    server: str
    tool: str  # the upstream's own tool name ("" with `request`)
    timeout: float
    traceparent: str | None = None  # passed on in the ToolCall
    # Another MCP request (resources/read, prompts/get) to forward instead of a `ToolCall` of
    # the check's params: one governed path for every kind of request (gateway/pipeline.py).
    request: UpstreamRequest | None = None


class PolicyCheck(Body):
    """→ `policy` (affinity key: agent). Reply: `policy.model.Decision` as a map.

    With `then` and an `allow` decision the policy worker does not reply: it forwards the request
    (FORWARD) to `upstream.<then.server>` as a `ToolCall` of `params` (or as `then.request`),
    with the decision in the answer's meta under `"policy"` — one bus round trip fewer for every
    allowed call."""

    agent: str
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    then: ThenCall | None = None
    # The policy-set generation the caller knows of (0: any). A worker on an older one first
    # fetches the current set from `policyset`, so a call made after a reload is decided by it.
    # The reply (or the forwarded answer's meta) says `version`: the set that decided.
    generation: int = 0


def policy_check(
    *,
    agent: str,
    tool: str,
    params: dict[str, Any],
    then: dict[str, Any] | None,
    generation: int,
) -> dict[str, Any]:
    """A `PolicyCheck` as its map (`PolicyCheck(...).dump()`), built without the model: every
    call sends one, and the policy worker validates it. `then`: a `ThenCall` map
    (`then_call`), or None."""
    check = {"agent": agent, "tool": tool, "params": params, "generation": generation}
    if then is not None:
        check["then"] = then
    return check


def then_call(
    *,
    server: str,
    tool: str,
    timeout: float,
    traceparent: str | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `ThenCall` as its map (`request`: an `UpstreamRequest` map), as `policy_check`."""
    then: dict[str, Any] = {"server": server, "tool": tool, "timeout": float(timeout)}
    if traceparent is not None:
        then["traceparent"] = traceparent
    if request is not None:
        then["request"] = request
    return then


class PolicySetQuery(Body):
    """→ `policyset`. Reply: `policy.policyset.PolicySet.dump()` — the current set."""

    op: Literal["get"] = "get"


# -- upstream.<server> -------------------------------------------------------------------------


class ToolCall(Body):
    """→ `upstream.<server>`. Reply: the MCP CallToolResult exactly as the upstream sent it.

    Partial replies: `{"progress": <notifications/progress params>}` while the call runs.
    """

    tool: str  # the upstream's own tool name (no `<server>.` prefix)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = None  # seconds; default: the server's timeout_seconds
    # W3C trace context of the call (`00-<trace id>-<the call's span id>-01`): an OpenAPI
    # source sends it to its backend (with X-Trace-Id), as the Go project does
    traceparent: str | None = None


def tool_call(
    *, tool: str, arguments: dict[str, Any], timeout: float | None, traceparent: str | None
) -> dict[str, Any]:
    """A `ToolCall` as its map, built without the model (the policy worker forwards one per
    allowed call; the upstream worker validates it)."""
    call: dict[str, Any] = {"tool": tool, "arguments": arguments}
    if timeout is not None:
        call["timeout"] = float(timeout)
    if traceparent is not None:
        call["traceparent"] = traceparent
    return call


class UpstreamMeta(Body):
    """READY/UPDATE body of an upstream worker: what the gateway's catalogue is built from."""

    server: str
    tools: list[dict[str, Any]] = Field(default_factory=list)
    server_info: dict[str, Any] = Field(default_factory=dict)
    pid: int = 0
    upstream_pid: int | None = None
    session: str = ""  # one per upstream MCP session: a new one when the worker starts a new server


class UpstreamStateName(StrEnum):
    """Where one upstream worker process is with its upstream (workers/upstream_lifecycle.py has
    the transitions)."""

    STARTING = "starting"  # starting its upstream (the process's first start, or after a wait)
    UP = "up"  # its upstream runs and it serves a slot of the server
    SPARE = "spare"  # its upstream runs; every slot is served: the warm spare, waiting for one
    RESTARTING = "restarting"  # its upstream stopped after a healthy run; a new one is starting
    BACKING_OFF = "backing_off"  # a start failed (or died soon after): waiting `retry_at`
    FAILED = "failed"  # starts keep failing (the wait reached its cap); still retried
    STOPPED = "stopped"  # the worker stops (a front-end: no worker of the server on the bus)


class UpstreamState(Body):
    """READY/UPDATE body of a worker of `upstream-state.<server>`, and the body of the event
    `upstream.<server>.<state>` it publishes (EVENT) on each transition: one upstream worker
    process's lifecycle state. A request to the service is answered with it."""

    server: str
    instance: str  # `<server>:<n>`, n the process's own slot number (the spare's too)
    state: UpstreamStateName
    reason: str = ""  # why, for people: `command 'x' not found on PATH`, `killed by SIGKILL`
    since: float = 0.0  # epoch seconds: when it entered this state
    failures: int = 0  # starts failed in a row
    retry_at: float = 0.0  # epoch seconds of the next start (backing_off, failed)
    pid: int = 0
    seq: int = 0  # transitions of this process so far: the later of two bodies has the higher


# -- traces ------------------------------------------------------------------------------------


class TraceRecord(Body):
    """One tool call (compat.md §6): the Go project's trace entry. Also the JSONL line format.

    Milliseconds are integers (Go's int64). `approval_status: "pending"` marks the provisional
    record of a call waiting for approval; the final record with the same trace_id replaces it."""

    model_config = ConfigDict(extra="allow")

    trace_id: str
    session_id: str = ""
    agent_id: str
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    policy: str
    policy_rule: str = ""
    status_code: int
    latency_ms: int
    error: str = ""
    timestamp: str  # RFC 3339, UTC
    approval_id: str | None = None
    approval_status: Literal["pending", "approved", "denied", "timeout"] | None = None
    approved_by: str | None = None
    approval_ms: int | None = None
    supervisor_reasoning: str | None = None
    supervisor_confidence: float | None = None
    estimated_input_tokens: int | None = None  # gateway/tokens.py
    estimated_output_tokens: int | None = None
    tokens_source: Literal["real", "estimate"] | None = None
    policy_version: str | None = None  # extension: content hash of the policy set that decided
    exit_code: int | None = None  # a CLI tool's (as the Go project's trace entry)
    backend_status: int | None = None  # an OpenAPI tool's backend HTTP status
    # Extension: this call's span for OpenTelemetry (gateway/pipeline.py): `id`, `parent` (the
    # caller's span, from traceparent), `start`/`end` and [start, end] of `policy`, `approval`,
    # `upstream`, all epoch ns (bus/PROTOCOL.md, Timings).
    span: dict[str, Any] | None = None

    @field_validator("latency_ms", "approval_ms", mode="before")
    @classmethod
    def _whole_ms(cls, value: Any) -> Any:
        return _ms(value) if isinstance(value, float) else value


def _ms(value: float) -> int:
    return round(value)


def trace_record(
    *,
    trace_id: str,
    agent_id: str,
    tool: str,
    policy: str,
    status_code: int,
    latency_ms: float,
    timestamp: str | None = None,
    session_id: str = "",
    params: dict[str, Any] | None = None,
    policy_rule: str = "",
    error: str = "",
    **optional: Any,
) -> dict[str, Any]:
    """A `TraceRecord` as its map (`TraceRecord(...).dump()`), built without the model: the call
    path makes one per call, and the trace writer validates every record it stores anyway.
    `timestamp` defaults to now. `optional`: the model's optional fields (approval_*,
    supervisor_*); None ones are left out."""
    if timestamp is None:
        timestamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    record = {
        "trace_id": trace_id,
        "session_id": session_id,
        "agent_id": agent_id,
        "tool": tool,
        "params": params if params is not None else {},
        "policy": policy,
        "policy_rule": policy_rule,
        "status_code": status_code,
        "latency_ms": _ms(latency_ms),
        "error": error,
        "timestamp": timestamp,
    }
    record.update((k, v) for k, v in optional.items() if v is not None)
    if isinstance(approval_ms := record.get("approval_ms"), float):
        record["approval_ms"] = _ms(approval_ms)
    return record


class TraceBatch(Body):
    """→ `traces`: record these (idempotent by trace_id). Reply: `{"stored": n}`."""

    op: Literal["record"] = "record"
    records: list[TraceRecord]


class AuditEvent(Body):
    """An act on the mesh's governance — an approval resolved, a grant made or revoked, a freeze,
    a tool definition accepted — written by the trace writer into the trace file's hash chain
    beside the call records (docs/audit.md; not a call: not in `/traces`). Build with
    `workers.audit.audit_event`."""

    kind: Literal["audit"] = "audit"  # tells an audit line from a call record in the file
    id: str  # unique: a replay after a lost ack is written once
    action: str  # `<noun>.<verb>`: approval.resolved, grant.created, grant.revoked, freeze.*, ...
    actor: str  # who: "human", an operator or agent id, "system:timeout", "auto:memory", ...
    subject: str  # what it acted on: an approval id, a grant id, a tool, an agent
    detail: dict[str, Any] = Field(default_factory=dict)
    timestamp: str  # RFC 3339, UTC


class AuditBatch(Body):
    """→ `traces`: write these audit events (idempotent by id). Reply: `{"stored": n}`."""

    op: Literal["audit"] = "audit"
    events: list[AuditEvent]


class TraceQuery(Body):
    """→ `traces`: newest first. Reply: `{"traces": [TraceRecord, ...]}`."""

    op: Literal["query"] = "query"
    agent: str | None = None
    tool: str | None = None  # glob, as in policies
    session_id: str | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


# -- MCP passthrough: upstream.<server> beyond tools/call ---------------------------------------
# (MCP fidelity: resources, prompts, upstream log messages, list_changed.)
#
# `ToolCall` and `UpstreamRequest` partials: `{"progress": <notifications/progress params>}` and
# `{"log": <notifications/message params>}`, in the order the upstream sent them. The MCP client
# SDK does not say which request a log message relates to, so an upstream worker streams each
# one to every call it has in flight at that moment (none in flight: the message is dropped).

# MCP methods an upstream worker passes through with `UpstreamRequest`.
PASSTHROUGH_LISTS = {  # list method → the result key holding its items
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}
PASSTHROUGH_METHODS = frozenset(
    {
        *PASSTHROUGH_LISTS,
        "resources/read",
        "prompts/get",
        "completion/complete",
        "resources/subscribe",
        "resources/unsubscribe",
    }
)


class UpstreamRequest(Body):
    """→ `upstream.<server>`: one MCP request (one of `PASSTHROUGH_METHODS`) passed through as is.

    List methods are answered as one page: the worker follows every `nextCursor` itself (a
    `cursor` in `params` is ignored). Reply: `{"result": <the MCP result exactly as sent>}`, or
    `{"error": {"code", "message", "data"?}}` when the upstream answered with a JSON-RPC error
    (the request itself went fine; bus ERRORs are for timeouts, a dead upstream, bad bodies).
    """

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = None  # seconds; default: the server's timeout_seconds
    progress: bool = False  # true: ask the upstream for progress and stream it as partials


class UpstreamLiveMeta(UpstreamMeta):
    """`UpstreamMeta` plus what front-ends need to notice list changes besides tools (whose
    changes show in `tools`): how many `notifications/<kind>/list_changed` the upstream sent
    since this worker started, per kind (`resources`, `prompts`). Sent again (UPDATE) on each."""

    list_changes: dict[str, int] = Field(default_factory=dict)
