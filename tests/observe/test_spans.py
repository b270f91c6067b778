"""A trace record's spans (observe/spans.py), as OTLP/JSON (observe/otlp_json.py) and through the
SDK exporter in stdout mode (observe/otel_export.py)."""

from __future__ import annotations

import json
import time

import pytest

from bus.messages import trace_record
from observe.otel_export import SpanExport
from observe.otlp_json import otlp_traces
from observe.spans import STATUS_ERROR, call_spans, child_id

MS = 1_000_000


def test_a_record_without_timings_reads_as_go_does() -> None:
    record = trace_record(
        trace_id="not-hex",
        agent_id="a",
        tool="fs.read",
        policy="allow",
        status_code=200,
        latency_ms=7,
        timestamp="2026-01-02T03:04:05Z",
    )
    (span,) = call_spans(record)  # no step timings: no children
    assert len(span.trace_id) == 32 and len(span.span_id) == 16  # valid ids all the same
    assert span.end - span.start == 7 * MS
    assert span.end == 1767323045 * 10**9
    assert span.parent_id is None


def test_steps_are_children_with_their_own_times() -> None:
    t = 10**18
    record = trace_record(
        trace_id="ab" * 16,
        agent_id="a",
        tool="fs.write",
        policy="human_approval",
        status_code=403,
        latency_ms=9,
        approval_id="ap1",
        approval_status="denied",
        approved_by="bob",
        error="approval ap1 denied by bob",
        span={
            "id": "cd" * 8,
            "start": t,
            "end": t + 9 * MS,
            "policy": [t + 1, t + 2],
            "approval": [t + 3, t + 8 * MS],
        },
    )
    call, policy, wait = call_spans(record)
    assert (policy.parent_id, wait.parent_id) == ("cd" * 8, "cd" * 8)
    assert policy.span_id == child_id("cd" * 8, "policy decision")
    assert (wait.start, wait.end) == (t + 3, t + 8 * MS)
    assert call.status == wait.status == STATUS_ERROR
    assert (
        call.attributes["approval.approved_by"] == "bob" and call.attributes["error.type"] == "403"
    )


def test_otlp_json_shape() -> None:
    record = trace_record(
        trace_id="ab" * 16,
        agent_id="a",
        tool="fs.read",
        policy="allow",
        status_code=200,
        latency_ms=1,
        span={"id": "cd" * 8, "parent": "ef" * 8, "start": 5, "end": 6},
    )
    pending = trace_record(
        trace_id="12" * 16,
        agent_id="a",
        tool="fs.w",
        policy="human_approval",
        status_code=0,
        latency_ms=0,
        approval_status="pending",
    )
    body = otlp_traces([record, pending])
    (span,) = body["resourceSpans"][0]["scopeSpans"][0]["spans"]  # the pending call has none yet
    assert (
        span["traceId"] == "ab" * 16
        and span["spanId"] == "cd" * 8
        and span["parentSpanId"] == "ef" * 8
    )
    assert (span["startTimeUnixNano"], span["endTimeUnixNano"], span["kind"]) == ("5", "6", 2)
    assert {"key": "agent.id", "value": {"stringValue": "a"}} in span["attributes"]
    assert span["status"] == {"code": 1}
    json.dumps(body)


def test_stdout_mode_prints_one_json_line_per_span(capsys: pytest.CaptureFixture[str]) -> None:
    t = time.time_ns()
    exporter = SpanExport("stdout", schedule_delay_ms=10)
    exporter.export(
        trace_record(
            trace_id="ab" * 16,
            agent_id="a",
            tool="fs.read",
            policy="allow",
            status_code=200,
            latency_ms=1,
            span={"id": "cd" * 8, "start": t, "end": t + MS, "upstream": [t + 10, t + 20]},
        )
    )
    exporter.shutdown()
    lines = capsys.readouterr().out.splitlines()
    spans = [json.loads(line) for line in lines]
    assert [s["name"] for s in spans] == ["tools/call fs.read", "tools/call read"]
    assert spans[1]["parent_id"] == "0x" + "cd" * 8


def test_resources_and_prompts_are_named_by_their_mcp_method() -> None:
    t = 10**18
    read = trace_record(
        trace_id="ab" * 16,
        agent_id="a",
        tool="docs.resource:file:///x.md",
        policy="allow",
        status_code=200,
        latency_ms=1,
        span={"id": "cd" * 8, "start": t, "end": t + 9, "upstream": [t + 1, t + 2]},
    )
    call, upstream = call_spans(read)
    assert call.name == "resources/read docs.resource:file:///x.md"
    assert call.attributes["mcp.method.name"] == "resources/read"
    assert (
        call.attributes["mcp.resource.uri"] == "file:///x.md"
        and "gen_ai.tool.name" not in call.attributes
    )
    assert upstream.name == "resources/read file:///x.md"
    (prompt,) = call_spans(
        trace_record(
            trace_id="ab" * 16,
            agent_id="a",
            tool="docs.prompt:summarise",
            policy="deny",
            status_code=403,
            latency_ms=1,
        )
    )
    assert prompt.attributes["mcp.method.name"] == "prompts/get"
    assert prompt.attributes["gen_ai.prompt.name"] == "summarise"
