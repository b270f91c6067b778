"""The `mesh` command (also `python -m agent_mesh.mesh_cli`): a client of a running mesh's HTTP API
(`MESH_URL`, default http://localhost:9090). Approving, denying, granting and revoking send
`MESH_OPERATOR_TOKEN` as `X-Operator-Token` when set (needed when the mesh has
`auth.operator_token`). A failure is one line on stderr and exit status 1 (`--debug`: traceback).

It reads the API's Go-compatible shapes (docs/compat.md): lists as bare arrays, RFC 3339 times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

import httpx

from agent_mesh.errors import connection_reason
from agent_mesh.tables import Column, clock, render, text

DEFAULT_URL = "http://localhost:9090"


class MeshError(Exception):
    """What went wrong, in one line, for the person at the terminal."""


class Mesh:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") if "://" in url else "http://" + url.rstrip("/")  # host:port will do
        token = os.environ.get("MESH_OPERATOR_TOKEN")
        self.headers = {"X-Operator-Token": token} if token else {}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = httpx.request(method, self.url + path, headers=self.headers, timeout=10, **kw)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise MeshError(f"invalid mesh URL {self.url!r}: {exc} (set MESH_URL or --url)") from None
        except httpx.HTTPError as exc:
            raise MeshError(f"cannot reach {self.url}: {connection_reason(exc)}; is the mesh running? "
                            "(set MESH_URL or --url)") from None
        try:
            body = response.json()
        except ValueError:
            raise MeshError(f"{method} {path}: HTTP {response.status_code} without a JSON body: is {self.url} "
                            "an agent-mesh? (set MESH_URL or --url)") from None
        answered = (path == "/health" and response.status_code == 503) or (
            path == "/reload" and response.status_code == 422)  # an invalid config: said by `run`
        if response.status_code >= 400 and not answered:
            error = body.get("error", body) if isinstance(body, dict) else body
            hint = ""
            if response.status_code in (401, 403) and "operator token" in str(error) and not self.headers:
                hint = " (set MESH_OPERATOR_TOKEN)"
            raise MeshError(f"{method} {path}: {error} (HTTP {response.status_code}){hint}")
        return body


def items(body: Any) -> list[dict[str, Any]]:
    """A list answer (the API answers lists as bare arrays, as the Go agent-mesh does)."""
    if not isinstance(body, list):
        raise MeshError(f"expected a list from the mesh, got {type(body).__name__} (is MESH_URL an agent-mesh?)")
    return [item for item in body if isinstance(item, dict)]


def columns_of_terminal() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def _count(value: Any) -> Any:
    return len(value) if isinstance(value, list | dict) else value


def _id8(value: Any) -> str:
    return str(value or "")[:8]


PENDING = [
    Column("id", "ID", min=8, shrink=None, render=_id8),
    Column("created_at", "TIME", min=8, shrink=None, render=clock),
    Column("agent_id", "AGENT", min=6, shrink=2),
    Column("tool", "TOOL", shrink=None),
    Column("risk", "RISK", min=0, shrink=1),
    Column("params", "PARAMS", min=0, shrink=0),
]
TRACES = [
    Column("timestamp", "TIME", min=8, shrink=None, render=clock),
    Column("agent_id", "AGENT", min=6, shrink=3),
    Column("tool", "TOOL", shrink=None),
    Column("policy", "POLICY", min=5, shrink=4),
    Column("status_code", "ST", min=3, shrink=None),
    Column("latency_ms", "MS", min=0, shrink=2, right=True,
           render=lambda v: "" if v is None else f"{float(v):.0f}" if float(v) >= 10 else f"{float(v):.1f}"),
    Column("detail", "PARAMS / ERROR", min=0, shrink=0),
]
GRANTS = [
    Column("id", "ID", min=8, shrink=None, render=_id8),
    Column("agent", "AGENT", min=6, shrink=1),
    Column("globs", "TOOLS", min=10, shrink=0),
    Column("expires_at", "UNTIL", min=8, shrink=None, render=clock),
    Column("remaining", "LEFT", min=0, shrink=2),
    Column("by", "BY", min=0, shrink=0),
]


def globs(grant: dict[str, Any]) -> list[str]:
    """A grant's tool globs: `tool_globs`, else `tools` as a list or Go's comma-joined string."""
    found = grant.get("tool_globs") or grant.get("tools") or []
    return [g for g in (found.split(",") if isinstance(found, str) else found) if g]


def grant_rows(grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**g, "globs": ", ".join(globs(g)), "by": g.get("granted_by") or g.get("created_by")} for g in grants]


def pending_rows(approvals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "risk": "INJECTION?" if a.get("injection_risk") else ""} for a in approvals]


def trace_rows(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "detail": t.get("error") or text(t.get("params"))} for t in traces]


def _resolve(mesh: Mesh, approval_id: str, decision: str, reasoning: str | None) -> Any:
    return mesh.call("POST", f"/approvals/{approval_id}/{decision}",
                     json={"resolved_by": os.environ.get("USER", "human"), "reasoning": reasoning})


def resolution_line(body: dict[str, Any]) -> str:
    return f"{_id8(body.get('id'))}: {body.get('status')}"


def _parser() -> argparse.ArgumentParser:
    # --url, --json and --debug work before and after the subcommand (`mesh health --json`): the
    # subcommands' copies leave them alone unless given (SUPPRESS), and main() fills the defaults.
    def common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", default=argparse.SUPPRESS,
                            help=f"the mesh's HTTP address (default $MESH_URL, else {DEFAULT_URL})")
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print the API's JSON instead of a table")
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show the traceback of a failure")
        return parser

    parser = common_options(argparse.ArgumentParser(prog="mesh", description="talk to a running agent-mesh"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return common_options(sub.add_parser(name, help=help, description=help))

    command("pending", "approvals waiting for a decision")
    command("show", "one approval, with the agent's recent traces").add_argument(
        "id", help="approval id or a unique prefix (8 characters)")
    for name in ("approve", "deny"):
        p = command(name, f"{name} a pending approval")
        p.add_argument("id", help="approval id or a unique prefix (8 characters)")
        p.add_argument("--reasoning", help="why (recorded in the trace)")
    command("watch", "live, interactive: a approve, d deny (each asks for an optional reason), "
                     "s skip, u bring skipped back, q quit")
    traces = command("traces", "recent tool calls, newest first")
    traces.add_argument("--agent", help="only this agent's calls")
    traces.add_argument("--tool", help="only this tool (a glob, as in policies)")
    traces.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    command("grants", "active grants")
    grant = command("grant", "let an agent call tools without approval for a while")
    grant.add_argument("agent", help="agent id (or a glob)")
    grant.add_argument("tools", nargs="+", help="tool names or globs, e.g. filesystem.write_file 'fs.*'")
    grant.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                       help="how long: 30m, 2h, 1h30m")
    command("revoke", "end a grant now").add_argument("id", help="grant id or a unique prefix")
    command("tools", "tools of every upstream")
    command("servers", "upstream servers and their workers")
    command("health", "the mesh's processes and upstreams (exit status 1 unless all are up)")
    command("reload", "read the config and policy_dir again and apply the policies (exit status 1 if "
                      "the new config is invalid: the policies in force stay)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    for option, default in (("url", os.environ.get("MESH_URL", DEFAULT_URL)), ("json", False), ("debug", False)):
        if not hasattr(args, option):
            setattr(args, option, default)
    try:
        code = run(args)
    except MeshError as exc:
        if args.debug:
            raise
        sys.exit(f"mesh {args.command}: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug or an answer we do not understand: still one line
        if args.debug:
            raise
        sys.exit(f"mesh {args.command}: {type(exc).__name__}: {exc} (--debug shows the traceback)")
    sys.exit(code)


def run(args: argparse.Namespace) -> int:
    mesh = Mesh(args.url)
    width = columns_of_terminal()
    if args.command == "watch":
        from agent_mesh.mesh_watch import watch

        watch(mesh)
        return 0
    view: str
    if args.command in ("approve", "deny"):
        body = _resolve(mesh, args.id, args.command, args.reasoning)
        view = resolution_line(body)
    elif args.command == "pending":
        body = mesh.call("GET", "/approvals", params={"status": "pending"})
        rows = pending_rows(items(body))
        view = render(PENDING, rows, width, "pending approvals") if rows else "nothing pending"
    elif args.command == "show":
        body = mesh.call("GET", f"/approvals/{args.id}")  # with the agent's recent_traces
        view = show(body, width)
    elif args.command == "traces":
        params = {k: v for k, v in {"agent": args.agent, "tool": args.tool, "limit": args.limit}.items() if v}
        body = mesh.call("GET", "/traces", params=params)
        rows = trace_rows(items(body))
        view = render(TRACES, rows, width) if rows else "no traces"
    elif args.command == "grants":
        body = mesh.call("GET", "/grants")
        rows = grant_rows(items(body))
        view = render(GRANTS, rows, width) if rows else "no active grants"
    elif args.command == "grant":
        body = mesh.call("POST", "/grants", json={
            "agent": args.agent, "tools": args.tools, "duration": args.duration,
            "created_by": f"mesh:{os.environ.get('USER', 'human')}"})
        view = (f"grant {_id8(body.get('id'))}: {body.get('agent')} may call {', '.join(globs(body))} "
                f"without approval until {clock(body.get('expires_at'))} (mesh revoke {_id8(body.get('id'))} ends it)")
    elif args.command == "revoke":
        body = mesh.call("DELETE", f"/grants/{args.id}")
        view = f"grant {_id8(body.get('id'))} revoked"
    elif args.command == "tools":
        body = mesh.call("GET", "/tools")
        rows = [{"name": t.get("name"), "description": t.get("description")} for t in items(body)]
        view = render([Column("name", "NAME", shrink=None), Column("description", "DESCRIPTION", min=0)],
                      rows, width)
    elif args.command == "servers":
        body = mesh.call("GET", "/mcp-servers")
        rows = [{**s, "tools": _count(s.get("tools")), "workers": _count(s.get("workers")),
                 "reason": s.get("error") or s.get("reason")} for s in items(body)]
        view = render([Column("name", "NAME", shrink=None), Column("transport", "TRANSPORT", shrink=None),
                       Column("status", "STATUS", shrink=None), Column("tools", "TOOLS", shrink=None),
                       Column("workers", "WORKERS", shrink=None), Column("reason", "REASON", min=0)],
                      rows, width)
    elif args.command == "reload":
        from agent_mesh.mesh_health import reload_view

        body = mesh.call("POST", "/reload")
        print(json.dumps(body, indent=2) if args.json else reload_view(body),
              file=sys.stderr if body.get("status") == "invalid" and not args.json else sys.stdout)
        return 1 if body.get("status") == "invalid" else 0
    else:
        from agent_mesh.mesh_health import health_view, healthy

        body = mesh.call("GET", "/health")
        view = health_view(body, width)
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            print(view)
        return 0 if healthy(body) else 1
    print(json.dumps(body, indent=2) if args.json else view)
    return 0


def show(approval: dict[str, Any], width: int) -> str:
    fields = ["id", "status", "agent_id", "tool", "params", "policy_rule", "created_at", "expires_at",
              "resolved_by", "reasoning", "injection_risk"]
    lines = []
    for key in fields:
        value = approval.get(key)
        if value is None or value == "":
            continue
        shown = clock(value) if key.endswith("_at") else text(value)
        lines.append(f"{key:<14} {shown}")
    grants = approval.get("active_grants") or []
    if grants:
        lines.append(f"{'active_grants':<14} " + "; ".join(f"{_id8(g.get('id'))} {text(g.get('tools'))}"
                                                           for g in grants))
    recent = trace_rows(approval.get("recent_traces") or [])
    lines.append("")
    if recent:
        lines.append(render(TRACES, recent, width, f"recent traces of {approval.get('agent_id')}"))
    else:
        lines.append(f"no recent traces of {approval.get('agent_id')}")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m agent_mesh.mesh_cli`: run the importable module, so that
    from agent_mesh.mesh_cli import main as _main  # mesh_watch raises the MeshError main catches

    _main()
