"""The Go shapes of the REST API's objects (gateway/api_views.py), table-tested."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from gateway.api_views import (
    approval_view,
    grant_globs,
    grant_view,
    rfc3339,
    server_view,
    tool_view,
)
from policy.durations import format_duration

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (272.7, "4m32s"),
        (120, "2m0s"),
        (3600, "1h0m0s"),
        (5400, "1h30m0s"),
        (90061, "25h1m1s"),
        (-3, "0s"),
    ],
)
def test_format_duration_is_gos_duration_string(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


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


def test_grant_view_has_gos_fields_with_one_glob_string() -> None:
    grant = {
        "id": "g" * 32,
        "agent": "claude",
        "tools": ["fs.read_*", "fs.list_*"],
        "created_at": NOW,
        "expires_at": NOW + 1800,
        "created_by": "http:127.0.0.1:5000",
        "revoked_at": None,
    }
    view = grant_view(grant, NOW)
    assert {
        k: view[k] for k in ("id", "agent", "tools", "expires_at", "remaining", "granted_by")
    } == {
        "id": "g" * 32,
        "agent": "claude",
        "tools": "fs.read_*,fs.list_*",
        "expires_at": rfc3339(NOW + 1800),
        "remaining": "30m0s",
        "granted_by": "http:127.0.0.1:5000",
    }
    assert view["tool_globs"] == ["fs.read_*", "fs.list_*"] and "revoked_at" not in view


@pytest.mark.parametrize(
    ("tools", "globs"),
    [
        ("fs.*", ["fs.*"]),
        ("fs.read_*, fs.list_*", ["fs.read_*", "fs.list_*"]),
        (["a", "b"], ["a", "b"]),
        ("", None),
        ([], None),
        ([1], None),
        ({"a": 1}, None),
        ("a,,b", None),
    ],
)
def test_grant_globs_take_gos_string_or_a_list(tools: Any, globs: list[str] | None) -> None:
    assert grant_globs(tools) == globs


def test_tool_view_is_gos_registry_tool_with_the_schema_beside() -> None:
    tool = {
        "name": "fs.read",
        "server": "fs",
        "inputSchema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "n": {"anyOf": []}},
            "required": ["path"],
        },
    }
    view = tool_view(tool)
    assert {
        k: view[k]
        for k in ("name", "description", "method", "path", "base_url", "source", "mcp_server")
    } == {
        "name": "fs.read",
        "description": "",
        "method": "",
        "path": "",
        "base_url": "",
        "source": "mcp",
        "mcp_server": "fs",
    }
    assert view["params"] == [
        {"name": "path", "in": "body", "type": "string", "required": True},
        {"name": "n", "in": "body", "type": "", "required": False},
    ]
    assert view["inputSchema"] == tool["inputSchema"]
    assert "params" not in tool_view(
        {"name": "x.y", "server": "x", "inputSchema": {"type": "object"}}
    )


def test_server_view_status_and_tool_names() -> None:
    up = server_view("fs", "stdio", ["fs.a"], True, {"workers": []})
    assert up == {
        "name": "fs",
        "transport": "stdio",
        "status": "ready",
        "tools": ["fs.a"],
        "workers": [],
    }
    down = server_view("fs", "stdio", [], False, {})
    assert down["status"] == "error" and down["error"] and down["tools"] == []
