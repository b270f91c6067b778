"""The `mesh` command: a client of a running mesh's HTTP API (`MESH_URL`, default
http://localhost:9090). Approving, denying and granting send `MESH_OPERATOR_TOKEN` as
`X-Operator-Token` when set (needed when the mesh has `auth.operator_token`)."""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import termios
import time
import tty
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

DEFAULT_URL = "http://localhost:9090"
console = Console()


class Mesh:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        token = os.environ.get("MESH_OPERATOR_TOKEN")
        self.headers = {"X-Operator-Token": token} if token else {}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = httpx.request(method, self.url + path, headers=self.headers, timeout=10, **kw)
        except httpx.HTTPError as exc:
            sys.exit(f"mesh: cannot reach {self.url}: {exc}")
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code >= 400 and path != "/health":
            sys.exit(f"mesh: {method} {path}: HTTP {response.status_code}: {body.get('error', body)}")
        return body


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:  # unix time
        return time.strftime("%H:%M:%S", time.localtime(value))
    if isinstance(value, dict | list):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return "" if value is None else str(value)


def _short(approvals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "id": a["id"][:8], "risk": "INJECTION?" if a.get("injection_risk") else ""} for a in approvals]


PENDING_COLUMNS = ["id", "created_at", "agent_id", "tool", "params", "risk"]


def _resolve(mesh: Mesh, approval_id: str, decision: str, reasoning: str | None) -> Any:
    return mesh.call("POST", f"/approvals/{approval_id}/{decision}",
                     json={"resolved_by": os.environ.get("USER", "human"), "reasoning": reasoning})


def watch(mesh: Mesh) -> None:
    """Live view of pending approvals; a = approve, d = deny, s = skip (the oldest first), q = quit."""
    if not sys.stdin.isatty():
        sys.exit("mesh watch: needs a terminal (use `mesh pending` in scripts)")
    skipped: set[str] = set()
    old = termios.tcgetattr(sys.stdin)
    try:
        tty.setcbreak(sys.stdin.fileno())
        while True:
            pending = [a for a in mesh.call("GET", "/approvals", params={"status": "pending"})
                       if a["id"] not in skipped]
            pending.sort(key=lambda a: a["created_at"])
            console.clear()
            console.print(_table(f"pending approvals at {mesh.url}", _short(pending), PENDING_COLUMNS))
            current = pending[0] if pending else None
            if current:
                console.print(f"[bold]{current['id'][:8]}[/] {current['agent_id']} → {current['tool']}: "
                              "[green]a[/]pprove  [red]d[/]eny  [yellow]s[/]kip  [dim]q[/]uit")
            else:
                console.print("nothing pending — q to quit")
            ready, _, _ = select.select([sys.stdin], [], [], 1.0)
            if not ready:
                continue
            key = sys.stdin.read(1).lower()
            if key == "q":
                return
            if current and key in ("a", "d"):
                result = _resolve(mesh, current["id"], "approve" if key == "a" else "deny", "via mesh watch")
                console.print(f"{current['id'][:8]}: {result['status']}")
            elif current and key == "s":
                skipped.add(current["id"])
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mesh", description="talk to a running agent-mesh")
    parser.add_argument("--url", default=os.environ.get("MESH_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pending", help="approvals waiting for a decision")
    sub.add_parser("show", help="one approval with the agent's recent traces").add_argument("id")
    for name in ("approve", "deny"):
        p = sub.add_parser(name, help=f"{name} a pending approval (id or 8-char prefix)")
        p.add_argument("id")
        p.add_argument("--reasoning")
    sub.add_parser("watch", help="live, interactive: a approve, d deny, s skip, q quit")
    traces = sub.add_parser("traces", help="recent tool calls, newest first")
    traces.add_argument("--agent")
    traces.add_argument("--tool")
    traces.add_argument("--limit", type=int, default=20)
    sub.add_parser("grants", help="active grants")
    sub.add_parser("tools", help="tools of every upstream")
    sub.add_parser("servers", help="upstream servers and their workers")
    sub.add_parser("health", help="liveness of every process role")
    args = parser.parse_args(argv)
    mesh = Mesh(args.url)

    if args.command == "watch":
        watch(mesh)
        return
    if args.command in ("approve", "deny"):
        body = _resolve(mesh, args.id, args.command, args.reasoning)
        print(json.dumps(body, indent=2) if args.json else f"{body['id'][:8]}: {body['status']}")
        return
    if args.command == "pending":
        body = mesh.call("GET", "/approvals", params={"status": "pending"})
        view = _table("pending approvals", _short(body), PENDING_COLUMNS)
    elif args.command == "show":
        body = mesh.call("GET", f"/approvals/{args.id}")
        view = _table(f"approval {body['id']}", [{"field": k, "value": v} for k, v in body.items()
                                                 if k not in ("recent_traces",)], ["field", "value"])
    elif args.command == "traces":
        params = {k: v for k, v in {"agent": args.agent, "tool": args.tool, "limit": args.limit}.items() if v}
        body = mesh.call("GET", "/traces", params=params)
        view = _table("traces", body,
                      ["timestamp", "agent_id", "tool", "policy", "status_code", "latency_ms", "error"])
    elif args.command == "grants":
        body = mesh.call("GET", "/grants")
        view = _table("grants", [{**g, "id": g["id"][:8]} for g in body],
                      ["id", "agent", "tools", "expires_at", "remaining", "granted_by"])
    elif args.command == "tools":
        body = mesh.call("GET", "/tools")
        rows = [{"name": t["name"], "description": (t.get("description") or "")[:60]} for t in body]
        view = _table("tools", rows, ["name", "description"])
    elif args.command == "servers":
        body = mesh.call("GET", "/mcp-servers")
        view = _table("servers", [{**s, "tools": len(s["tools"]), "workers": len(s["workers"])} for s in body],
                      ["name", "transport", "status", "tools", "workers"])
    else:
        body = mesh.call("GET", "/health")
        view = _table(f"health: {body['status']}", [{"upstream": k, "status": v} for k, v in body["upstreams"].items()],
                      ["upstream", "status"])
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        console.print(view)
