"""An approval as the outside sees it: the Go agent-mesh's `approvalView` (its
`proxy/handler.go` is the contract), sent by the REST API (gateway/api_views.py) and in the
approval webhook's body (workers/approval.py). Pure: records in, JSON-ready dicts out.

The approval service keeps epoch seconds; this turns them into RFC 3339 times and the time left
into a Go duration string. An optional field without a value is left out, never `null`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from policy.durations import format_duration


def rfc3339(epoch: float) -> str:
    """Epoch seconds → RFC 3339 in UTC, e.g. `2026-12-02T00:52:15.123456Z`."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def _present(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if v is not None and v != ""}


def approval_view(approval: dict[str, Any], now: float) -> dict[str, Any]:
    """An approval item: Go's `approvalView` (id, agent_id, tool, params, policy_rule, status,
    created_at, remaining while pending, resolved_by, resolved_at, reasoning, confidence,
    injection_risk when true), plus our session_id, trace_id, expires_at, replayed_at."""
    out: dict[str, Any] = {
        "id": approval["id"],
        "agent_id": approval["agent_id"],
        "tool": approval["tool"],
        "params": approval.get("params") or {},
        "policy_rule": approval.get("policy_rule") or "",
        "status": approval["status"],
        "created_at": rfc3339(approval["created_at"]),
    }
    optional: dict[str, Any] = {
        "resolved_by": approval.get("resolved_by"),
        "reasoning": approval.get("reasoning"),
        "confidence": approval.get("confidence"),
        "session_id": approval.get("session_id"),
        "trace_id": approval.get("trace_id"),
    }
    if approval["status"] == "pending" and approval.get("expires_at") is not None:
        optional["remaining"] = format_duration(approval["expires_at"] - now)
    for key in ("resolved_at", "expires_at", "replayed_at"):
        if approval.get(key) is not None:
            optional[key] = rfc3339(approval[key])
    if approval.get("injection_risk"):
        optional["injection_risk"] = True
    # policy_rule is never omitted in Go; the rest are.
    return out | _present(optional)
