"""The hot-path builders of bus/messages.py make exactly what their models would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from bus import frames
from bus.approval_messages import (
    APPROVAL_OPS,
    ApprovalClaimReplay,
    ApprovalGet,
    ApprovalList,
    ApprovalOp,
    ApprovalResolve,
    ApprovalSubmit,
    ApprovalWait,
    FreezeCreate,
    FreezeList,
    FreezeThaw,
    GrantCreate,
    GrantList,
    GrantRevoke,
)
from bus.messages import Body, TraceBatch, TraceRecord, trace_record

REQUIRED: dict[str, Any] = {
    "trace_id": "t1",
    "agent_id": "claude",
    "tool": "fs.read",
    "policy": "allow",
    "status_code": 200,
    "latency_ms": 1.25,
    "timestamp": "2026-11-26T08:00:00.000001Z",
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "session_id": "s",
            "params": {"path": "/x", "n": [1, {"a": None}]},
            "policy_rule": "r",
            "error": "",
        },
        {
            "approval_id": "a1",
            "approval_status": "approved",
            "approved_by": "alice",
            "approval_ms": 12.5,
            "supervisor_reasoning": "fine",
            "supervisor_confidence": 0.9,
        },
        {
            "approval_id": None,
            "approval_status": None,
            "approved_by": None,
            "supervisor_confidence": None,
        },
        {"status_code": 502, "policy": "allow", "error": "upstream unavailable: fs (worker died)"},
    ],
)
def test_trace_record_is_the_models_map(extra: dict[str, Any]) -> None:
    fields = {**REQUIRED, **extra}
    built = trace_record(**fields)
    assert built == TraceRecord(**fields).dump()
    assert (
        TraceBatch.model_validate({"op": "record", "records": [built]}).records[0].dump() == built
    )


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


APPROVAL_MESSAGES = [
    ApprovalSubmit(
        agent="claude", tool="fs.write_file", params={"path": "/a"}, callback_url="http://h/cb"
    ),
    ApprovalWait(id="abcd1234"),
    ApprovalResolve(id="abcd1234", decision="approve", resolved_by="alice", confidence=0.5),
    ApprovalClaimReplay(id="abcd1234"),
    ApprovalList(status="pending", tool="fs.*"),
    ApprovalGet(id="abcd1234", raw=True),
    GrantCreate(agent="claude", tools=["fs.*"], duration="30m"),
    GrantList(agent="claude"),
    GrantRevoke(id="abcd1234"),
    FreezeCreate(agent="claude", reason="leaking", created_by="ops"),
    FreezeList(),
    FreezeThaw(id="abcd1234", thawed_by="ops"),
]


@pytest.mark.parametrize("message", APPROVAL_MESSAGES, ids=lambda m: type(m).__name__)
def test_each_approval_operation_is_one_documented_message(message: Body) -> None:
    """What a sender builds crosses the bus (msgpack) and is validated back into the same
    message."""
    wire = frames.unpack(frames.pack(message.dump()))
    assert wire["op"] == type(message).model_fields["op"].default
    assert APPROVAL_OPS.validate_python(wire) == message
    assert (type(message).__doc__ or "").startswith(f"→ `approval` `{wire['op']}`")


def test_the_approval_operations_are_the_union() -> None:
    ops = {type(m).model_fields["op"].default for m in APPROVAL_MESSAGES}
    assert len(ops) == len(APPROVAL_MESSAGES) == len(get_args(get_args(ApprovalOp)[0]))
