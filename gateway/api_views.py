"""The REST API's objects in the Go agent-mesh's shapes (its `proxy/handler.go` is the contract):
the grant, tool and server views (the approval's is policy/approval_view.py: the approval
webhook sends it too), RFC 3339 times and Go duration strings.

The services keep their own records (epoch seconds, lists of globs); only the HTTP edge turns
them into these shapes. Our extra fields stay beside Go's; an optional field without a value is
left out, never `null`.
"""

from __future__ import annotations

from typing import Any

from policy.approval_view import rfc3339
from policy.durations import format_duration


def grant_view(grant: dict[str, Any], now: float) -> dict[str, Any]:
    """A grant: Go's `grantView` (id, agent, tools as one glob string, expires_at, remaining,
    granted_by), plus `tool_globs` (ours may hold several globs: `tools` joins them with ",")
    and created_at / revoked_at."""
    globs = grant["tools"] if isinstance(grant["tools"], list) else [grant["tools"]]
    out: dict[str, Any] = {
        "id": grant["id"],
        "agent": grant["agent"],
        "tools": ",".join(globs),
        "expires_at": rfc3339(grant["expires_at"]),
        "remaining": format_duration(grant["expires_at"] - now),
        "granted_by": grant.get("created_by") or "",
        "tool_globs": globs,
        "created_at": rfc3339(grant["created_at"]),
    }
    if grant.get("revoked_at") is not None:
        out["revoked_at"] = rfc3339(grant["revoked_at"])
    return out


def grant_globs(tools: Any) -> list[str] | None:
    """A grant request's `tools`: Go sends one glob string; we also take "a,b" or a list."""
    if isinstance(tools, str):
        globs = [t.strip() for t in tools.split(",")]
    elif isinstance(tools, list):
        globs = tools
    else:
        return None
    return globs if globs and all(isinstance(g, str) and g for g in globs) else None


def tool_view(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as Go's registry lists it (name, description, method, path, base_url, params,
    source, mcp_server) with the upstream's own definition (inputSchema, ...) beside."""
    schema = _object(tool.get("inputSchema"))
    properties = _object(schema.get("properties"))
    required = schema["required"] if isinstance(schema.get("required"), list) else []
    params = [
        {
            "name": name,
            "in": "body",
            "type": prop["type"] if isinstance(prop.get("type"), str) else "",
            "required": name in required,
        }
        for name, prop in properties.items()
        if isinstance(prop, dict)
    ]
    source = tool.get("source") or "mcp"
    out = {
        **tool,
        "description": tool.get("description") or "",
        "method": "",
        "path": "",
        "base_url": "",
        "source": source,
    }
    if source == "mcp":  # Go leaves mcp_server out for its CLI and OpenAPI tools
        out["mcp_server"] = tool.get("server", "")
    if params:
        out["params"] = params
    else:
        out.pop("params", None)
    return out


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def server_view(
    name: str, transport: str, tools: list[str], up: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    """An upstream server as Go's `ServerStatus` (name, transport, status "ready" | "error",
    error, tools as names), with our detail (workers, queued, ...) beside."""
    out: dict[str, Any] = {
        "name": name,
        "transport": transport,
        "status": "ready" if up else "error",
    }
    if not up:
        out["error"] = extra.pop("error", None) or "no live worker for this server"
    return out | {"tools": tools} | extra
