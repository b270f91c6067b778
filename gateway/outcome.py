"""How one governed request ends (gateway/pipeline.py), whatever its kind (a tool call, a
resource read, a prompt): what it asks of its upstream once allowed and how that answer is read
(`UpstreamCall`), and the `Outcome` every front-end answers from and the trace records.

`status` is HTTP-like (200 served; 202 waiting for approval; 4xx/5xx refused or failed, the
codes of bus/errors.py's table); `policy` the verdict (allow | deny | human_approval |
rate_limited | error). An upstream's own JSON-RPC error to a passed-through request keeps its
code and data (`rpc_code`, `rpc_data`) for the MCP front-end.

The upstream is asked a tool call (`ToolCall`: the answer is the CallToolResult) or another MCP
request passed through (`UpstreamRequest`: `{"result"}` or the upstream's own `{"error"}`),
bus/messages.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bus.errors import RPC_INTERNAL_ERROR, status_of_rpc_code
from bus.messages import ThenCall, ToolCall, UpstreamRequest
from gateway.catalog import ServerView


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

    def then(self) -> ThenCall:
        """The policy check's `then`: what the policy worker forwards if it allows the request."""
        if isinstance(self.request, ToolCall):
            return ThenCall(
                server=self.server.name,
                tool=self.request.tool,
                timeout=self.timeout,
                traceparent=self.request.traceparent,
            )
        return ThenCall(
            server=self.server.name, tool="", timeout=self.timeout, request=self.request
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


ToolCallOutcome = Outcome  # its name when only tool calls were governed


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
