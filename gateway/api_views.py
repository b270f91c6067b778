"""The REST API's objects in the Go agent-mesh's shapes (its `proxy/handler.go` is the contract):
the approval, grant, tool and server views, RFC 3339 times and Go duration strings.

The services keep their own records (epoch seconds, lists of globs); only the HTTP edge turns
them into these shapes. Our extra fields stay beside Go's; an optional field without a value is
left out, never `null`.
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
