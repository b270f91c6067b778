"""The `mesh` command: a client of a running mesh's HTTP API (`MESH_URL`, default
http://localhost:9090). Read-only views for now; approvals arrive with the approvals worker."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

DEFAULT_URL = "http://localhost:9090"
APPROVAL_COMMANDS = ("pending", "show", "approve", "deny", "watch")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        response = httpx.get(url.rstrip("/") + path, params=params, timeout=10)
    except httpx.HTTPError as exc:
        sys.exit(f"mesh: cannot reach {url}: {exc}")
    body = response.json()
    if response.status_code >= 400 and path != "/health":
        sys.exit(f"mesh: {path}: HTTP {response.status_code}: {body.get('error', body)}")
    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mesh", description="talk to a running agent-mesh")
    parser.add_argument("--url", default=os.environ.get("MESH_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    traces = sub.add_parser("traces", help="recent tool calls, newest first")
    traces.add_argument("--agent")
    traces.add_argument("--tool")
    traces.add_argument("--limit", type=int, default=20)
    sub.add_parser("tools", help="tools of every upstream")
    sub.add_parser("servers", help="upstream servers and their workers")
    sub.add_parser("health", help="liveness of every process role")
    for name in APPROVAL_COMMANDS:
        sub.add_parser(name, help="approvals (not implemented yet)").add_argument("id", nargs="?")
    args = parser.parse_args(argv)

    if args.command in APPROVAL_COMMANDS:
        sys.exit(f"mesh {args.command}: human approvals are not implemented yet in this agent-mesh")
    if args.command == "traces":
        params = {k: v for k, v in {"agent": args.agent, "tool": args.tool, "limit": args.limit}.items() if v}
        body = _get(args.url, "/traces", params)
        rows, columns = body["traces"], ["timestamp", "agent_id", "tool", "policy", "status_code", "latency_ms", "error"]
    elif args.command == "tools":
        body = _get(args.url, "/tools")
        rows = [{"name": t["name"], "description": (t.get("description") or "")[:60]} for t in body["tools"]]
        columns = ["name", "description"]
    elif args.command == "servers":
        body = _get(args.url, "/mcp-servers")
        rows = [{**s, "workers": len(s["workers"])} for s in body["servers"]]
        columns = ["name", "transport", "status", "tools", "workers"]
    else:
        body = _get(args.url, "/health")
        rows = [{"upstream": k, "status": v} for k, v in body["upstreams"].items()]
        columns = ["upstream", "status"]
    print(json.dumps(body, indent=2) if args.json else _table(rows, columns))
