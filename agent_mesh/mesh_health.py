"""`mesh health`: the /health answer as a table of roles and upstreams, each with its state,
since when, and why it is down.

Upstreams come from `upstream_states` (`{name: {state, reason, since, instances}}`: each
upstream's lifecycle, README "Health") when the mesh says it; else, tolerant of older shapes,
`upstreams` as `{name: "up"}` (the reasons beside, in `upstream_errors`) or
`{name: {"status", "reason"}}` (or a list of such objects with `name`). `services` as
`{name: {"workers": n}}`.
"""

from __future__ import annotations

from typing import Any

from agent_mesh.tables import Column, clock, render, text

QUIET = ("up", "spare")  # states of a server's worker processes that need no word


def _lifecycles(states: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in states.items():
        if not isinstance(entry, dict):
            continue
        instances = [i for i in entry.get("instances") or [] if isinstance(i, dict)]
        # An upstream that is up says nothing, but a worker of it that is not does (restarting).
        others = [
            f"{i.get('instance')} {i.get('state')}"
            + (f": {i['reason']}" if i.get("reason") else "")
            for i in instances
            if i.get("state") not in QUIET
        ]
        rows.append(
            {
                "name": name,
                "kind": "upstream",
                "status": entry.get("state"),
                "since": entry.get("since"),
                "workers": sum(1 for i in instances if i.get("state") == "up") or None,
                "reason": entry.get("reason") or "; ".join(others),
            }
        )
    return rows


def _upstreams(body: dict[str, Any]) -> list[dict[str, Any]]:
    states = body.get("upstream_states")
    if isinstance(states, dict):
        return _lifecycles(states)
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
            rows.append(
                {
                    "name": name,
                    "kind": "upstream",
                    "status": value.get("status"),
                    "reason": value.get("reason") or value.get("error") or errors.get(name) or "",
                }
            )
        else:
            rows.append(
                {
                    "name": name,
                    "kind": "upstream",
                    "status": value,
                    "reason": errors.get(name) or "",
                }
            )
    return rows


def _services(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("services") or {}
    rows = []
    for name, value in raw.items() if isinstance(raw, dict) else []:
        workers = value.get("workers") if isinstance(value, dict) else value
        count = len(workers) if isinstance(workers, list | dict) else workers
        rows.append(
            {
                "name": name,
                "kind": "service",
                "status": "up" if count else "down",
                "workers": count,
                "reason": "" if count else "no live worker",
            }
        )
    return rows


def healthy(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    rows = _upstreams(body) + _services(body)
    policy_set = body.get("policy_set")
    refused = isinstance(policy_set, dict) and bool(policy_set.get("error"))
    return (
        body.get("status") in ("ok", "healthy")
        and all(r["status"] == "up" for r in rows)
        and not refused
    )


def policy_lines(policy_set: Any) -> list[str]:
    """The policy set in force (live reload): version, a refused reload, restarts needed."""
    if not isinstance(policy_set, dict):
        return []
    head = (
        f"policies: set {policy_set.get('version')} (generation {policy_set.get('generation')}, "
        f"{policy_set.get('policies')} policies, since {policy_set.get('loaded_at')})"
    )
    lines = [head]
    if policy_set.get("error"):
        problems = str(policy_set["error"]).splitlines()
        lines.append(
            f"policies: last reload REFUSED ({policy_set.get('error_at')}), the set above "
            f"stays in force: {problems[0]}"
        )
        lines += [f"  {line.strip()}" for line in problems[1:]]
    lines += [f"restart needed: {line}" for line in policy_set.get("restart_needed") or []]
    return lines


def reload_view(body: Any) -> str:
    """`mesh reload`'s answer."""
    if not isinstance(body, dict):
        return text(body)
    status = body.get("status")
    head = {
        "reloaded": "policies reloaded",
        "unchanged": "policies unchanged (same content)",
        "invalid": "policies NOT reloaded: the config is invalid; the set in force stays",
    }.get(str(status), str(status))
    lines = [head, *policy_lines({**body, "error": None})]
    if status == "invalid":
        lines += [f"  {line}" for line in str(body.get("error", "")).splitlines()]
    return "\n".join(lines)


def freeze_lines(body: dict[str, Any]) -> list[str]:
    freezes = body.get("freezes")
    if not isinstance(freezes, dict) or not freezes.get("count"):
        return []
    everything = "; everything is frozen (`mesh freeze --all`)" if freezes.get("all") else ""
    return [f"freezes: {freezes['count']} in force{everything} (`mesh freezes`)"]


def health_view(body: Any, width: int) -> str:
    if not isinstance(body, dict):
        return text(body)
    extras = [
        f"{key} {text(body[key])}"
        for key in ("bus", "version", "tools", "traces", "trace_backlog")
        if key in body and not isinstance(body[key], dict | list)
    ]
    head = f"health: {body.get('status')}" + (f" ({', '.join(extras)})" if extras else "")
    changes = [c["line"] for c in body.get("tool_changes") or [] if isinstance(c, dict)]
    head = "\n".join(
        [head, *policy_lines(body.get("policy_set")), *freeze_lines(body), *map(text, changes)]
    )
    rows = _services(body) + _upstreams(body)
    if not rows:
        return head
    columns = [
        Column("name", "NAME", shrink=None),
        Column("kind", "KIND", shrink=None),
        Column("status", "STATUS", shrink=None),
        Column("workers", "WORKERS", min=0, shrink=1),
        Column("since", "SINCE", min=0, shrink=-1, render=clock),  # gives way to the reason
        Column("reason", "REASON", min=20, shrink=0),
    ]
    return head + "\n" + render(columns, rows, width)
