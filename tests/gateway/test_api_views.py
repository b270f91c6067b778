"""The Go shapes of the REST API's objects (gateway/api_views.py), table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api_views import grant_globs, grant_view, server_view, tool_view
from policy.approval_view import rfc3339
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
