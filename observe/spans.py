"""A trace record → the OpenTelemetry spans of that call: one span for the governed call and a
child for each step it took (policy decision, approval wait, upstream call), with the real start
and end times the workers measured (the record's `span`, bus/PROTOCOL.md "Timings").

Pure (no SDK, no I/O): the trace writer's exporter (observe/otel_export.py) and `GET
/otel-traces` (observe/otlp_json.py) both build on it. Attribute names: the Go project's
(`agent.id`, `tool.name`, `policy.action`, ... docs/otel.md there) so its dashboards keep
working, plus OpenTelemetry's semantic conventions for MCP and GenAI where they exist
(`mcp.method.name`, `mcp.session.id`, `gen_ai.tool.name`, `gen_ai.operation.name`,
`gen_ai.usage.*`, `http.response.status_code`, `error.type`): docs/observability.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from typing import Any

VERSION = version("agent-mesh")  # as installed, from pyproject.toml


SERVICE = "agent-mesh"
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3  # OTLP's SpanKind numbers
STATUS_OK, STATUS_ERROR = 1, 2
Attribute = str | int | float | bool


@dataclass
class SpanData:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_id: str | None
    name: str
    kind: int
    start: int  # epoch ns
    end: int
    attributes: dict[str, Attribute] = field(default_factory=dict)
    status: int = STATUS_OK
    message: str = ""
    sampled: bool = True
    remote_parent: bool = False  # the parent is the caller's span (traceparent), not ours


def child_id(span_id: str, step: str) -> str:
    """A step's span id, derived from its call's: the exporter and /otel-traces agree on it."""
    return hashlib.blake2b(f"{span_id}:{step}".encode(), digest_size=8).hexdigest()


def _hex_id(value: str, size: int) -> str:
    value = value.lower()
    if len(value) == size and all(c in "0123456789abcdef" for c in value) and value != "0" * size:
        return value
    return hashlib.blake2b(value.encode(), digest_size=size // 2).hexdigest()


def _epoch_ns(timestamp: str) -> int:
    try:
        return int(datetime.fromisoformat(timestamp).timestamp() * 1e9)
    except ValueError:
        return 0


def _interval(timing: Any) -> tuple[int, int] | None:
    if isinstance(timing, list) and len(timing) == 2 and all(isinstance(t, int) for t in timing):
        return timing[0], max(timing[0], timing[1])
    return None


def mcp_method(tool: str) -> tuple[str, str, str]:
    """(MCP method, its target, the server) of a governed name: `<server>.<tool>`,
    `<server>.resource:<uri>` or `<server>.prompt:<name>` (gateway/mcp_proxy.py)."""
    server, _, rest = tool.partition(".")
    for kind, method in (("resource:", "resources/read"), ("prompt:", "prompts/get")):
        if rest.startswith(kind):
            return method, rest[len(kind) :], server
    return "tools/call", rest, server


def call_spans(record: dict[str, Any]) -> list[SpanData]:
    """The spans of one final trace record (a provisional one, still waiting, has none yet)."""
    span = record.get("span") or {}
    trace_id = _hex_id(str(record.get("trace_id", "")), 32)
    call_id = span.get("id") if isinstance(span.get("id"), str) else None
    call_id = _hex_id(call_id or f"{trace_id}:{record.get('timestamp', '')}", 16)
    latency_ns = int(record.get("latency_ms") or 0) * 1_000_000
    start, end = span.get("start"), span.get("end")
    if not (isinstance(start, int) and isinstance(end, int)):
        # A record without timings (older, or written by the Go mesh): Go's reading of it, the
        # timestamp as the end and the latency before it.
        end = _epoch_ns(str(record.get("timestamp", "")))
        start = end - latency_ns
    tool, status_code = str(record.get("tool", "")), int(record.get("status_code") or 0)
    policy, error = str(record.get("policy", "")), str(record.get("error") or "")
    failed = bool(error) or policy == "deny"
    method, target, server = mcp_method(tool)
    attrs: dict[str, Attribute] = {
        # Go's names
        "agent.id": str(record.get("agent_id", "")),
        "tool.name": tool,
        "policy.action": policy,
        "policy.rule": str(record.get("policy_rule", "")),
        "http.status_code": status_code,
        # semantic conventions: MCP server spans, GenAI tool execution, HTTP
        "mcp.method.name": method,
        "gen_ai.agent.id": str(record.get("agent_id", "")),
        "http.response.status_code": status_code,
        "agent_mesh.latency_ms": round((end - start) / 1e6, 3),
    }
    attrs.update(_target(method, tool, target))
    if record.get("session_id"):
        attrs["session.id"] = attrs["mcp.session.id"] = str(record["session_id"])
    if error:
        attrs["error.message"] = error
    if failed:
        attrs["error.type"] = str(status_code) if status_code >= 400 else policy
    if record.get("approval_id"):
        attrs["approval.id"] = str(record["approval_id"])
        attrs["approval.status"] = str(record.get("approval_status") or "")
        if record.get("approved_by"):
            attrs["approval.approved_by"] = str(record["approved_by"])
        if record.get("approval_ms"):
            attrs["approval.duration_ms"] = int(record["approval_ms"])
    if record.get("estimated_input_tokens"):
        attrs["llm.token.input"] = attrs["gen_ai.usage.input_tokens"] = int(
            record["estimated_input_tokens"]
        )
        attrs["llm.token.output"] = attrs["gen_ai.usage.output_tokens"] = int(
            record.get("estimated_output_tokens") or 0
        )
    if record.get("policy_version"):
        attrs["agent_mesh.policy.version"] = str(record["policy_version"])
    upstream = _interval(span.get("upstream"))
    if upstream is not None:
        attrs["agent_mesh.upstream.latency_ms"] = round((upstream[1] - upstream[0]) / 1e6, 3)
    parent = span.get("parent") if isinstance(span.get("parent"), str) else None
    sampled = str(span.get("flags", "01"))[-1:] in "13579bdf"  # the caller's sampled flag
    call = SpanData(
        trace_id,
        call_id,
        parent,
        f"{method} {tool}",
        KIND_SERVER,
        start,
        end,
        attrs,
        STATUS_ERROR if failed else STATUS_OK,
        error,
        sampled,
        remote_parent=parent is not None,
    )
    spans = [call]

    def step(
        name: str,
        timing: tuple[int, int],
        kind: int,
        step_attrs: dict[str, Attribute],
        failed: bool = False,
    ) -> None:
        spans.append(
            SpanData(
                trace_id,
                child_id(call_id, name),
                call_id,
                name,
                kind,
                timing[0],
                timing[1],
                step_attrs,
                STATUS_ERROR if failed else STATUS_OK,
                error if failed else "",
                sampled,
            )
        )

    if (policy_at := _interval(span.get("policy"))) is not None:
        step(
            "policy decision",
            policy_at,
            KIND_INTERNAL,
            {"policy.action": policy, "policy.rule": attrs["policy.rule"]},
        )
    if (approval_at := _interval(span.get("approval"))) is not None:
        step(
            "approval wait",
            approval_at,
            KIND_INTERNAL,
            {k: v for k, v in attrs.items() if k.startswith("approval.")},
            failed=record.get("approval_status") in ("denied", "timeout"),
        )
    if upstream is not None:
        step(
            f"{method} {target}",
            upstream,
            KIND_CLIENT,
            {
                "mcp.method.name": method,
                **_target(method, target, target),
                "agent_mesh.upstream.server": server,
            },
            failed=status_code >= 500,
        )
    return spans


def _target(method: str, tool: str, target: str) -> dict[str, Attribute]:
    """What the call acts on, by the conventions' names for each MCP method."""
    if method == "resources/read":
        return {"mcp.resource.uri": target}
    if method == "prompts/get":
        return {"gen_ai.prompt.name": target}
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
