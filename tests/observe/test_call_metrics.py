"""The trace writer's call metrics (observe/call_metrics.py): what each record counts."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bus.messages import trace_record
from observe.call_metrics import CallMetrics


def samples(metrics: CallMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def record(
    agent: str = "a", tool: str = "fs.read", policy: str = "allow", status: int = 200, **extra: Any
) -> dict[str, Any]:
    return trace_record(
        trace_id="t",
        agent_id=agent,
        tool=tool,
        policy=policy,
        status_code=status,
        latency_ms=1,
        **extra,
    )


def test_calls_by_tool_agent_decision_status() -> None:
    m = CallMetrics()
    m.observe(record())
    m.observe(record())
    m.observe(record(policy="deny", status=403))
    got = samples(m)
    labels = (("agent", "a"), ("decision", "allow"), ("status", "200"), ("tool", "fs.read"))
    assert got[("agent_mesh_calls_total", labels)] == 2
    assert (
        got[
            (
                "agent_mesh_calls_total",
                (("agent", "a"), ("decision", "deny"), ("status", "403"), ("tool", "fs.read")),
            )
        ]
        == 1
    )


def test_agents_past_the_limit_are_other() -> None:
    m = CallMetrics(max_agents=2)
    for agent in ("a", "b", "c", "d", "a"):
        m.observe(record(agent=agent))
    agents = {
        dict(k[1])["agent"]: v for k, v in samples(m).items() if k[0] == "agent_mesh_calls_total"
    }
    assert agents == {"a": 2, "b": 1, "other": 2}


def test_pending_records_wait_for_their_final_one() -> None:
    m = CallMetrics()
    m.observe(record(policy="human_approval", status=0, approval_status="pending"))
    assert not [k for k in samples(m) if k[0] == "agent_mesh_calls_total"]


def test_latencies_come_from_the_span_timings() -> None:
    m = CallMetrics()
    ms = 1_000_000
    span = {"start": 0, "end": 30 * ms, "upstream": [5 * ms, 25 * ms], "approval": [1 * ms, 4 * ms]}
    m.observe(record(policy="human_approval", approval_status="approved", span=span))
    got = samples(m)
    assert (
        got[
            (
                "agent_mesh_call_duration_seconds_sum",
                (("decision", "human_approval"), ("tool", "fs.read")),
            )
        ]
        == 0.03
    )
    assert got[("agent_mesh_upstream_duration_seconds_sum", (("tool", "fs.read"),))] == 0.02
    assert got[("agent_mesh_approval_wait_seconds_sum", (("status", "approved"),))] == 0.003
    # 0.5 ms is the first bucket: a sub-millisecond answer is not lumped with a slow one
    assert (
        got[
            (
                "agent_mesh_call_duration_seconds_bucket",
                (("decision", "human_approval"), ("le", "0.0005"), ("tool", "fs.read")),
            )
        ]
        == 0
    )


def test_rate_limit_refusals_say_which_limit() -> None:
    m = CallMetrics()
    m.observe(record(policy="rate_limited", status=429, error="loop detected: ..."))
    m.observe(record(policy="rate_limited", status=429, error="rate limit exceeded"))
    got = samples(m)
    assert got[("agent_mesh_rate_limited_total", (("agent", "a"), ("reason", "loop")))] == 1
    assert got[("agent_mesh_rate_limited_total", (("agent", "a"), ("reason", "rate_limit")))] == 1


def test_resource_reads_and_many_tools_stay_bounded() -> None:
    m = CallMetrics(max_tools=2)
    for tool in (
        "fs.resource:file:///a",
        "fs.resource:file:///b",
        "git.log",
        "git.made-up",
        "git.other-made-up",
    ):
        m.observe(record(tool=tool))
    tools = {
        dict(k[1])["tool"]: v for k, v in samples(m).items() if k[0] == "agent_mesh_calls_total"
    }
    assert tools == {"fs.resource": 2, "git.log": 1, "other": 2}
