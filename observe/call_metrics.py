"""Metrics of calls, kept by the trace writer: every governed call of every front-end reaches it
as a trace record (acknowledged, never lost), so one process counts them all, exactly, without
Prometheus' multiprocess mode. The gateway asks for them over the bus when `/metrics` is scraped
(`traces` op `metrics`) and adds its own gauges (gateway/metrics_route.py).

Label values are bounded: tools are the catalogue's, decisions and statuses a handful, and agent
ids get their own value only up to `max_agents` (later ones count as `other`). Params never.
A restarted trace writer starts from zero, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# 0.5 ms .. 60 s: a policy-only answer is well under a millisecond, an upstream may take a minute.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
APPROVAL_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
OTHER = "other"


class CallMetrics:
    def __init__(self, max_agents: int = 100, max_tools: int = 1000) -> None:
        self.max_agents, self.max_tools = max_agents, max_tools
        self._agents: set[str] = set()
        self._tools: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.calls = Counter(
            "agent_mesh_calls",
            "Governed calls, by tool, agent, policy decision and HTTP status",
            ["tool", "agent", "decision", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "agent_mesh_call_duration_seconds",
            "Whole call as the caller saw it (policy, approval wait, upstream)",
            ["tool", "decision"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "agent_mesh_upstream_duration_seconds",
            "The upstream MCP call alone, as its worker measured it",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.approval_wait = Histogram(
            "agent_mesh_approval_wait_seconds",
            "From asking for approval to its resolution",
            ["status"],
            buckets=APPROVAL_BUCKETS,
            registry=r,
        )
        self.refused = Counter(
            "agent_mesh_rate_limited",
            "Calls refused by a rate limit or loop detection",
            ["agent", "reason"],
            registry=r,
        )
        self.spans = Counter(
            "agent_mesh_otel_spans",
            "Spans handed to the OpenTelemetry exporter, by result "
            "(exported, dropped: the collector did not take them)",
            ["result"],
            registry=r,
        )

    def spans_exported(self, ok: bool, n: int) -> None:
        """observe/otel_export.py's `counted` (its exporter thread; counters are thread-safe)."""
        self.spans.labels("exported" if ok else "dropped").inc(n)

    def agent_label(self, agent: str) -> str:
        return _bounded(agent, self._agents, self.max_agents)

    def tool_label(self, tool: str) -> str:
        """A resource read is `<server>.resource` (URIs are unbounded); CLI subcommands an agent
        may invent are bounded like agents."""
        server, dot, rest = tool.partition(".")
        if rest.startswith("resource:"):
            tool = f"{server}{dot}resource"
        return _bounded(tool, self._tools, self.max_tools)

    def observe(self, record: dict[str, Any]) -> None:
        """Count one stored trace record. A provisional one (waiting for approval) is not a
        finished call: its final record is counted when it comes."""
        if record.get("approval_status") == "pending":
            return
        tool, decision = self.tool_label(str(record.get("tool", ""))), str(record.get("policy", ""))
        agent = self.agent_label(str(record.get("agent_id", "")))
        self.calls.labels(tool, agent, decision, str(record.get("status_code", 0))).inc()
        span = record.get("span") or {}
        start, end = span.get("start"), span.get("end")
        if isinstance(start, int) and isinstance(end, int) and end >= start:
            self.latency.labels(tool, decision).observe((end - start) / 1e9)
        else:  # a record without span timings (a Go-written one replayed, an old journal)
            self.latency.labels(tool, decision).observe(float(record.get("latency_ms", 0)) / 1000)
        if (seconds := _step(span, "upstream")) is not None:
            self.upstream.labels(tool).observe(seconds)
        status = record.get("approval_status")
        if status is not None and (seconds := _step(span, "approval")) is not None:
            self.approval_wait.labels(str(status)).observe(seconds)
        elif status is not None and isinstance(record.get("approval_ms"), int):
            self.approval_wait.labels(str(status)).observe(record["approval_ms"] / 1000)
        if decision == "rate_limited":
            reason = (
                "loop" if str(record.get("error", "")).startswith("loop detected") else "rate_limit"
            )
            self.refused.labels(agent, reason).inc()

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


def _bounded(value: str, seen: set[str], limit: int) -> str:
    if value in seen:
        return value
    if len(seen) < limit:
        seen.add(value)
        return value
    return OTHER


def _step(span: dict[str, Any], step: str) -> float | None:
    timing = span.get(step)
    if isinstance(timing, list) and len(timing) == 2 and all(isinstance(t, int) for t in timing):
        return float(max(0, timing[1] - timing[0]) / 1e9)
    return None
