"""`mesh health`: the /health answer as a table of roles and upstreams, each with why it is down.

Tolerant of /health's shapes: `upstreams` as `{name: "up"}` (the reasons beside, in
`upstream_errors`) or `{name: {"status", "reason"}}` (or a list of such objects with `name`),
`services` as `{name: {"workers": n}}`.
"""

from __future__ import annotations

from typing import Any

from agent_mesh.tables import Column, render, text


def _upstreams(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("upstreams") or {}
    if isinstance(raw, list):
        entries = [(str(u.get("name")), u) for u in raw if isinstance(u, dict)]
    else:
        entries = list(raw.items()) if isinstance(raw, dict) else []
    found = body.get("upstream_errors")
    errors: dict[str, Any] = found if isinstance(found, dict) else {}
    rows = []
    for name, value in entries:
        if isinstance(value, dict):
            rows.append({"name": name, "kind": "upstream", "status": value.get("status"),
                         "reason": value.get("reason") or value.get("error") or errors.get(name) or ""})
        else:
            rows.append({"name": name, "kind": "upstream", "status": value, "reason": errors.get(name) or ""})
    return rows


def _services(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("services") or {}
    rows = []
    for name, value in (raw.items() if isinstance(raw, dict) else []):
        workers = value.get("workers") if isinstance(value, dict) else value
        count = len(workers) if isinstance(workers, list | dict) else workers
        rows.append({"name": name, "kind": "service", "status": "up" if count else "down",
                     "workers": count, "reason": "" if count else "no live worker"})
    return rows


def healthy(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    rows = _upstreams(body) + _services(body)
    return body.get("status") in ("ok", "healthy") and all(r["status"] == "up" for r in rows)


def health_view(body: Any, width: int) -> str:
    if not isinstance(body, dict):
        return text(body)
    extras = [f"{key} {text(body[key])}" for key in ("bus", "version", "tools", "traces", "trace_backlog")
              if key in body and not isinstance(body[key], dict | list)]
    head = f"health: {body.get('status')}" + (f" ({', '.join(extras)})" if extras else "")
    rows = _services(body) + _upstreams(body)
    if not rows:
        return head
    columns = [Column("name", "NAME", shrink=None), Column("kind", "KIND", shrink=None),
               Column("status", "STATUS", shrink=None), Column("workers", "WORKERS", min=0, shrink=1),
               Column("reason", "REASON", min=20, shrink=0)]
    return head + "\n" + render(columns, rows, width)
