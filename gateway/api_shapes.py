"""What the REST routes answer, as types: the Go project's shapes (docs/compat.md §3, built by
gateway/api_views.py) with our extra fields beside them. They describe the answers in the OpenAPI
document (gateway/openapi.py), and schemathesis checks every answer against them. Objects stay
open (extra fields ride along, as compat.md allows); an optional field is absent, never null.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from bus.messages import TraceRecord


class Error(TypedDict):
    """Every refusal: what went wrong and what to do."""

    error: str


class InternalError(TypedDict):
    """What escaped a handler (gateway/last_resort.py): logged with this trace id."""

    error: Literal["internal error"]
    trace_id: str


class ToolCallResponse(TypedDict):
    """Go's ToolCallResponse; every answer of POST /tool/..., refusals included."""

    trace_id: str
    policy: str  # allow | deny | human_approval | rate_limited | error
    latency_ms: int
    result: NotRequired[Any]  # the upstream's MCP CallToolResult, as it sent it
    error: NotRequired[str]
    approval_id: NotRequired[str]
    approval_status: NotRequired[str]
    approved_by: NotRequired[str]


class SessionSummary(TypedDict):
    session_id: str
    agent_id: str  # the session's first agent
    event_count: int
    first_seen: str
    last_seen: str
    tools: list[str]
    agents: list[str]


class GrantView(TypedDict):
    id: str
    agent: str
    tools: str  # Go's one glob string: ours joined with ","
    expires_at: str
    remaining: str  # Go duration
    granted_by: str
    tool_globs: list[str]
    created_at: str
    revoked_at: NotRequired[str]


class ApprovalView(TypedDict):
    id: str
    agent_id: str
    tool: str
    params: dict[str, Any]
    policy_rule: str
    status: str  # pending | approved | denied | timeout
    created_at: str
    remaining: NotRequired[str]
    resolved_by: NotRequired[str]
    resolved_at: NotRequired[str]
    reasoning: NotRequired[str]
    confidence: NotRequired[float]
    injection_risk: NotRequired[bool]
    session_id: NotRequired[str]
    trace_id: NotRequired[str]
    expires_at: NotRequired[str]
    replayed_at: NotRequired[str]


class ApprovalDetail(ApprovalView):
    recent_traces: list[TraceRecord]
    active_grants: list[GrantView]


class Resolved(TypedDict):
    status: str  # approved | denied
    id: str
    approval: ApprovalView


class Revoked(TypedDict):
    status: Literal["revoked"]
    id: str
    grant: GrantView


class FreezeView(TypedDict):
    """A freeze (the kill switch): calls it stops are refused with 403 naming it."""

    id: str
    kind: Literal["agent", "tool", "all"]
    target: str  # the agent id or glob, the tool glob; "*" for all
    reason: str
    created_at: str
    created_by: str
    thawed_at: NotRequired[str]
    thawed_by: NotRequired[str]
    denied_approvals: NotRequired[int]  # on creation: the pending approvals it denied


class Thawed(TypedDict):
    status: Literal["thawed"]
    id: str
    freeze: FreezeView


class ToolParam(TypedDict):
    name: str
    # "in", "type", "required" as Go's registry lists them
    type: str
    required: bool


class ToolPin(TypedDict):
    """A pinned tool's definition (docs/pinning.md): `changed` until an operator accepts it."""

    status: Literal["pinned", "changed"]
    fingerprint: str  # of the definition listed now
    mode: NotRequired[Literal["block", "approve", "warn"]]  # changed: what its calls get
    diff: NotRequired[list[str]]  # changed: the pinned definition vs the listed one


class ToolView(TypedDict):
    """Go's registry.Tool, with the upstream's own definition (inputSchema, ...) beside."""

    name: str
    description: str
    method: str
    path: str
    base_url: str
    source: str
    mcp_server: str
    params: NotRequired[list[ToolParam]]
    inputSchema: NotRequired[dict[str, Any]]
    pin: NotRequired[ToolPin]  # an MCP server's tool
    injection_phrases: NotRequired[list[str]]  # known injection phrases its description carries


class ToolChange(TypedDict):
    """A tool whose definition changed since it was pinned, not accepted yet."""

    tool: str
    server: str
    mode: Literal["block", "approve", "warn"]
    old_fingerprint: str
    new_fingerprint: str
    seen_at: float  # epoch seconds
    diff: list[str]  # readable: description old -> new, schema keys added / removed
    line: str  # one line saying all that and how to accept it


class ToolAccepted(TypedDict):
    status: Literal["accepted"]
    tool: str
    fingerprint: str  # the definition now pinned
    accepted_by: str
    diff: list[str]  # what was accepted


UpstreamLifecycle = Literal[
    "starting", "up", "spare", "restarting", "backing_off", "failed", "stopped"
]  # bus/messages.py UpstreamStateName


class WorkerView(TypedDict):
    slot: str | None
    inflight: int | None
    served: int | None
    pid: int | None


class ServerView(TypedDict):
    """Go's ServerStatus, with our workers beside."""

    name: str
    transport: str
    status: Literal["ready", "error"]
    tools: list[str]
    error: NotRequired[str]
    workers: NotRequired[list[WorkerView]]
    configured_workers: NotRequired[int]
    queued: NotRequired[int]
    state: NotRequired[UpstreamLifecycle]  # the server's lifecycle state (README, Health)


class ServiceSummary(TypedDict):
    workers: int
    served: dict[str, int]


class PolicySetView(TypedDict):
    version: str
    generation: int
    policies: int
    loaded_at: str
    error: NotRequired[str]
    error_at: NotRequired[str]
    restart_needed: NotRequired[list[str]]


class UpstreamInstance(TypedDict):
    """One upstream worker process's lifecycle state (bus/messages.py UpstreamState)."""

    instance: str  # `<server>:<n>`
    state: UpstreamLifecycle
    since: str
    pid: int
    reason: NotRequired[str]
    failures: NotRequired[int]  # starts failed in a row
    retry_at: NotRequired[str]  # the next start (backing_off, failed)


class UpstreamLifecycleView(TypedDict):
    """An upstream's state: its best worker process's (up if one serves), why, since when."""

    state: UpstreamLifecycle
    reason: NotRequired[str]
    since: NotRequired[str]
    instances: list[UpstreamInstance]


class Ready(TypedDict):
    status: Literal["ok", "degraded"]
    bus: Literal["up", "down"]
    services: dict[str, ServiceSummary]
    upstreams: dict[str, Literal["up", "down"]]
    upstream_errors: NotRequired[dict[str, str]]
    upstream_states: dict[str, UpstreamLifecycleView]
    trace_backlog: int
    internal_errors: int
    pid: int


class FreezeSummary(TypedDict):
    """The kill switch: freezes in force (GET /freezes, an operator's view, says whom and why)."""

    count: int
    all: bool  # a freeze of everything (`mesh freeze --all`) holds


class Health(Ready):
    """Go's {status, tools, traces, version}, our detail beside."""

    tools: int
    traces: dict[str, Any]
    version: str
    policy_set: PolicySetView
    tool_changes: NotRequired[list[ToolChange]]  # changed tools not accepted yet (pinning)
    freezes: NotRequired[FreezeSummary]  # absent when the approval service did not answer


class Version(TypedDict):
    version: str
    commit: str
    date: str
    name: str
    implementation: str


class Reloaded(PolicySetView):
    status: Literal["reloaded", "unchanged", "invalid"]
