"""The trace store (workers/tracer.py): idempotent by trace_id, a final record replaces the
provisional one of a call that waited for approval, and /health's stats stay exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bus.messages import TraceQuery, TraceRecord, trace_record
from workers.tracer import TraceStore


def rec(trace_id: str, **fields: Any) -> TraceRecord:
    base: dict[str, Any] = {
        "trace_id": trace_id,
        "agent_id": "a",
        "tool": "fs.read",
        "policy": "allow",
        "status_code": 200,
        "latency_ms": 3.4,
    }
    return TraceRecord(**trace_record(**{**base, **fields}))


def pending(trace_id: str) -> TraceRecord:
    return rec(
        trace_id,
        policy="human_approval",
        status_code=0,
        latency_ms=0,
        approval_id="p1",
        approval_status="pending",
    )


def final(trace_id: str, **fields: Any) -> TraceRecord:
    return rec(
        trace_id,
        policy="human_approval",
        approval_id="p1",
        approval_status="approved",
        estimated_input_tokens=4,
        estimated_output_tokens=9,
        tokens_source="estimate",
        **fields,
    )


def test_final_record_replaces_the_provisional_one_in_place(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", tmp_path / "t.jsonl")
    store.record([rec("t0"), pending("t1")])
    store.record([rec("t2")])
    assert [t["trace_id"] for t in store.query(TraceQuery())] == ["t2", "t1", "t0"]
    assert store.query(TraceQuery(agent="a"))[1]["approval_status"] == "pending"
    stored = store.record([final("t1")])
    assert [t["approval_status"] for t in stored] == ["approved"]
    traces = store.query(TraceQuery())
    assert [t["trace_id"] for t in traces] == ["t2", "t1", "t0"]  # same place
    assert traces[1]["approval_status"] == "approved" and traces[1]["latency_ms"] == 3
    # Replays change nothing: neither the final record again nor a late provisional one.
    assert store.record([final("t1", error="late"), pending("t1"), rec("t0")]) == []
    assert store.query(TraceQuery())[1]["error"] == ""
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(t["trace_id"], t.get("approval_status")) for t in lines] == [
        ("t0", None),
        ("t1", "pending"),
        ("t2", None),
        ("t1", "approved"),
    ]


def test_provisional_and_final_in_one_batch(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", None)
    store.record([pending("t1"), final("t1")])
    (only,) = store.query(TraceQuery())
    assert only["approval_status"] == "approved"
    assert store.stats["total"] == 1 and store.stats["estimated_output_tokens"] == 9


def test_stats_are_gos_and_survive_a_restart(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", None)
    store.record(
        [
            rec(
                "t0", estimated_input_tokens=2, estimated_output_tokens=5, tokens_source="estimate"
            ),
            rec("t1", policy="deny", status_code=403, error="denied by policy p: no"),
            pending("t2"),
            rec("t3", policy="allow", status_code=502, error="upstream unavailable: fs"),
        ]
    )
    store.record([final("t2", error="")])
    expected = {
        "total": 4,
        "allowed": 2,
        "denied": 1,
        "human_approval": 1,
        "errors": 1,
        "estimated_input_tokens": 6,
        "estimated_output_tokens": 14,
    }
    assert store.stats == expected
    assert TraceStore(tmp_path / "t.db", None).stats == expected  # counted from the table


def test_sessions_are_gos_session_summaries(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", None)
    store.record(
        [
            rec("t0", session_id="s", agent_id="b"),
            rec("t1", session_id="s", tool="fs.list"),
            rec("t2", session_id=""),
        ]
    )
    (summary,) = store.sessions(10)
    assert {k: summary[k] for k in ("session_id", "agent_id", "event_count", "tools")} == {
        "session_id": "s",
        "agent_id": "b",
        "event_count": 2,
        "tools": ["fs.list", "fs.read"],
    }
    assert summary["first_seen"] <= summary["last_seen"] and summary["agents"] == ["a", "b"]


def test_calls_sharing_the_agents_trace_are_each_stored(tmp_path: Path) -> None:
    """An agent that sends its W3C traceparent on every call gives them one trace id: each call
    (its own span id) is stored, a replayed one is not, and a waiting call is completed in place."""
    store = TraceStore(tmp_path / "t.db", None)
    a, b = {"id": "a" * 16, "start": 1, "end": 2}, {"id": "b" * 16, "start": 3}
    assert len(store.record([rec("shared", span=a), pending_with(b)])) == 2
    assert store.record([rec("shared", span=a)]) == []  # a replay
    assert len(store.record([final("shared", span={**b, "end": 4})])) == 1
    traces = store.query(TraceQuery())
    assert [(t["trace_id"], t["span"]["id"], t.get("approval_status")) for t in traces] == [
        ("shared", "b" * 16, "approved"),
        ("shared", "a" * 16, None),
    ]
    assert store.stats["total"] == 2


def pending_with(span: dict[str, Any]) -> TraceRecord:
    return rec(
        "shared",
        policy="human_approval",
        status_code=0,
        latency_ms=0,
        approval_id="p1",
        approval_status="pending",
        span=span,
    )
