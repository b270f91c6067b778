"""Spans as OTLP/JSON (the protobuf JSON mapping: ids in hex, 64-bit numbers as strings), in the
Go project's `GET /otel-traces` shape: one `resourceSpans` entry, one scope, every span."""

from __future__ import annotations

from typing import Any

from observe.spans import SERVICE, VERSION, Attribute, SpanData, call_spans


def _value(value: Attribute) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _attributes(attrs: dict[str, Attribute]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attrs.items()]


def _span(span: SpanData) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.parent_id:
        out["parentSpanId"] = span.parent_id
    out |= {
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start),
        "endTimeUnixNano": str(span.end),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status, **({"message": span.message} if span.message else {})},
    }
    return out


def otlp_traces(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The recent calls (trace records, newest first) as one OTLP/JSON export request. A call
    still waiting for approval has no spans yet."""
    spans = [
        _span(s) for r in records if r.get("approval_status") != "pending" for s in call_spans(r)
    ]
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": _attributes({"service.name": SERVICE, "service.version": VERSION})
                },
                "scopeSpans": [{"scope": {"name": SERVICE, "version": VERSION}, "spans": spans}],
            }
        ]
    }
