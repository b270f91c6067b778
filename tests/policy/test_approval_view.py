"""An approval's public shape (policy/approval_view.py): Go's approvalView, table-tested."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from policy.approval_view import approval_view, rfc3339

NOW = 1_800_000_000.0


def test_rfc3339_is_utc_and_parseable() -> None:
    text = rfc3339(NOW + 0.25)
    assert text.endswith("Z") and datetime.fromisoformat(text).timestamp() == NOW + 0.25


PENDING: dict[str, Any] = {
    "id": "a" * 32,
    "status": "pending",
    "agent_id": "claude",
    "tool": "fs.write_file",
    "params": {"path": "/x"},
    "session_id": "",
    "trace_id": "t" * 32,
    "policy_rule": "claude",
    "created_at": NOW - 28,
    "expires_at": NOW + 272,
    "resolved_at": None,
    "resolved_by": None,
    "reasoning": None,
    "confidence": None,
    "replayed_at": None,
    "injection_risk": False,
}


def test_pending_approval_has_remaining_and_no_nulls() -> None:
    view = approval_view(PENDING, NOW)
    assert view["remaining"] == "4m32s" and view["created_at"] == rfc3339(NOW - 28)
    assert None not in view.values()
    for omitted in (
        "resolved_at",
        "resolved_by",
        "reasoning",
        "confidence",
        "injection_risk",
        "session_id",
    ):
        assert omitted not in view
    assert {"id", "agent_id", "tool", "params", "policy_rule", "status", "created_at"} <= set(view)


def test_resolved_approval_has_resolution_and_no_remaining() -> None:
    resolved = {
        **PENDING,
        "status": "approved",
        "resolved_at": NOW,
        "resolved_by": "alice",
        "reasoning": "ok",
        "confidence": 0.9,
        "injection_risk": True,
    }
    view = approval_view(resolved, NOW + 10)
    assert "remaining" not in view
    assert (view["resolved_at"], view["resolved_by"], view["reasoning"], view["confidence"]) == (
        rfc3339(NOW),
        "alice",
        "ok",
        0.9,
    )
    assert view["injection_risk"] is True
