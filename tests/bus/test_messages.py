"""The hot-path builders of bus/messages.py make exactly what their models would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bus.messages import TraceBatch, TraceRecord, trace_record

REQUIRED: dict[str, Any] = {"trace_id": "t1", "agent_id": "claude", "tool": "fs.read", "policy": "allow",
                            "status_code": 200, "latency_ms": 1.25, "timestamp": "2026-11-26T08:00:00.000001Z"}


@pytest.mark.parametrize("extra", [
    {},
    {"session_id": "s", "params": {"path": "/x", "n": [1, {"a": None}]}, "policy_rule": "r", "error": ""},
    {"approval_id": "a1", "approval_status": "approved", "approved_by": "alice", "approval_ms": 12.5,
     "supervisor_reasoning": "fine", "supervisor_confidence": 0.9},
    {"approval_id": None, "approval_status": None, "approved_by": None, "supervisor_confidence": None},
    {"status_code": 502, "policy": "allow", "error": "upstream unavailable: fs (worker died)"},
])
def test_trace_record_is_the_models_map(extra: dict[str, Any]) -> None:
    fields = {**REQUIRED, **extra}
    built = trace_record(**fields)
    assert built == TraceRecord(**fields).dump()
    assert TraceBatch.model_validate({"op": "record", "records": [built]}).records[0].dump() == built


def test_trace_record_needs_every_required_field() -> None:
    missing = dict(REQUIRED)
    del missing["status_code"]
    with pytest.raises(TypeError, match="status_code"):
        trace_record(**missing)


def test_trace_record_stamps_now_by_default() -> None:
    fields = dict(REQUIRED)
    del fields["timestamp"]
    before = datetime.now(UTC)
    stamp = trace_record(**fields)["timestamp"]
    assert stamp.endswith("Z") and before <= datetime.fromisoformat(stamp) <= datetime.now(UTC)
