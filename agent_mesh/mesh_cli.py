"""The `mesh` command (also `python -m agent_mesh.mesh_cli`): a client of a running mesh's HTTP API
(`MESH_URL`, default http://localhost:9090). Approving, denying, granting, revoking, freezing,
thawing, reloading and accepting a tool's definition send `MESH_OPERATOR_TOKEN` as
`X-Operator-Token` when set (needed when the mesh has `auth.operator_token`). A failure is one
line on stderr and exit status 1 (`--debug`: traceback).

It reads the API's Go-compatible shapes (docs/compat.md): lists as bare arrays, RFC 3339 times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from agent_mesh import mesh_freeze
from agent_mesh.mesh_client import (
    DEFAULT_URL,
    GRANTS,
    PENDING,
    TRACES,
    Mesh,
    MeshError,
    columns_of_terminal,
    count,
    globs,
    grant_rows,
    id8,
    items,
    pending_rows,
    resolution_line,
    resolve,
    trace_rows,
)
from agent_mesh.tables import Column, clock, render, text


def _parser() -> argparse.ArgumentParser:
    # --url, --json and --debug work before and after the subcommand (`mesh health --json`): the
    # subcommands' copies leave them alone unless given (SUPPRESS), and main() fills the defaults.
    def common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--url",
            default=argparse.SUPPRESS,
            help=f"the mesh's HTTP address (default $MESH_URL, else {DEFAULT_URL})",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the API's JSON instead of a table",
        )
        parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback of a failure",
        )
        return parser

    parser = common_options(
        argparse.ArgumentParser(prog="mesh", description="talk to a running agent-mesh")
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return common_options(sub.add_parser(name, help=help, description=help))

    command("pending", "approvals waiting for a decision")
    command("show", "one approval, with the agent's recent traces").add_argument(
        "id", help="approval id or a unique prefix (8 characters)"
    )
    for name in ("approve", "deny"):
        p = command(name, f"{name} a pending approval")
        p.add_argument("id", help="approval id or a unique prefix (8 characters)")
        p.add_argument("--reasoning", help="why (recorded in the trace)")
    command(
        "watch",
        "live, interactive: a approve, d deny (each asks for an optional reason), "
        "s skip, u bring skipped back, q quit",
    )
    traces = command("traces", "recent tool calls, newest first")
    traces.add_argument("--agent", help="only this agent's calls")
    traces.add_argument("--tool", help="only this tool (a glob, as in policies)")
    traces.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    command("grants", "active grants")
    grant = command("grant", "let an agent call tools without approval for a while")
    grant.add_argument("agent", help="agent id (or a glob)")
    grant.add_argument(
        "tools", nargs="+", help="tool names or globs, e.g. filesystem.write_file 'fs.*'"
    )
    grant.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help="how long: 30m, 2h, 1h30m"
    )
    command("revoke", "end a grant now").add_argument("id", help="grant id or a unique prefix")
    mesh_freeze.add_commands(command)
    tools = command("tools", "tools of every upstream, with their pin and flags")
    accept = common_options(
        tools.add_subparsers(dest="action", metavar="ACTION").add_parser(
            "accept",
            help="accept a tool's changed definition (its calls are served again)",
            description="pin the definition a tool lists now, after reading its diff (mesh health)",
        )
    )
    accept.add_argument("tool", help="<server>.<tool>")
    accept.add_argument(
        "--fingerprint", help="only if the change is still this one (from mesh health --json)"
    )
    command("servers", "upstream servers and their workers")
    command("health", "the mesh's processes and upstreams (exit status 1 unless all are up)")
    command(
        "reload",
        "read the config and policy_dir again and apply the policies (exit status 1 if "
        "the new config is invalid: the policies in force stay)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    for option, default in (
        ("url", os.environ.get("MESH_URL", DEFAULT_URL)),
        ("json", False),
        ("debug", False),
    ):
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
        body = resolve(mesh, args.id, args.command, args.reasoning)
        view = resolution_line(body)
    elif args.command == "pending":
        body = mesh.call("GET", "/approvals", params={"status": "pending"})
        rows = pending_rows(items(body))
        view = render(PENDING, rows, width, "pending approvals") if rows else "nothing pending"
    elif args.command == "show":
        body = mesh.call("GET", f"/approvals/{args.id}")  # with the agent's recent_traces
        view = show(body, width)
    elif args.command == "traces":
        params = {
            k: v
            for k, v in {"agent": args.agent, "tool": args.tool, "limit": args.limit}.items()
            if v
        }
        body = mesh.call("GET", "/traces", params=params)
        rows = trace_rows(items(body))
        view = render(TRACES, rows, width) if rows else "no traces"
    elif args.command == "grants":
        body = mesh.call("GET", "/grants")
        rows = grant_rows(items(body))
        view = render(GRANTS, rows, width) if rows else "no active grants"
    elif args.command == "grant":
        body = mesh.call(
            "POST",
            "/grants",
            json={
                "agent": args.agent,
                "tools": args.tools,
                "duration": args.duration,
                "created_by": f"mesh:{os.environ.get('USER', 'human')}",
            },
        )
        view = (
            f"grant {id8(body.get('id'))}: {body.get('agent')} may call {', '.join(globs(body))} "
            f"without approval until {clock(body.get('expires_at'))} (mesh revoke "
            f"{id8(body.get('id'))} ends it)"
        )
    elif args.command == "revoke":
        body = mesh.call("DELETE", f"/grants/{args.id}")
        view = f"grant {id8(body.get('id'))} revoked"
    elif args.command in mesh_freeze.COMMANDS:
        body, view = mesh_freeze.run(mesh, args, width)
    elif args.command == "tools" and getattr(args, "action", None) == "accept":
        body = mesh.call(
            "POST",
            f"/tools/{args.tool}/accept",
            json={
                "fingerprint": args.fingerprint,
                "accepted_by": f"mesh:{os.environ.get('USER', 'human')}",
            },
        )
        view = f"{body.get('tool')}: definition {text(body.get('fingerprint'))[:12]} accepted " + (
            f"({'; '.join(body.get('diff') or [])})" if body.get("diff") else ""
        )
    elif args.command == "tools":
        body = mesh.call("GET", "/tools")
        rows = [
            {"name": t.get("name"), "note": tool_note(t), "description": t.get("description")}
            for t in items(body)
        ]
        view = render(
            [
                Column("name", "NAME", shrink=None),
                Column("note", "PIN", min=0, shrink=1),
                Column("description", "DESCRIPTION", min=0),
            ],
            rows,
            width,
        )
    elif args.command == "servers":
        body = mesh.call("GET", "/mcp-servers")
        rows = [
            {
                **s,
                "tools": count(s.get("tools")),
                "workers": count(s.get("workers")),
                "reason": s.get("error") or s.get("reason"),
            }
            for s in items(body)
        ]
        view = render(
            [
                Column("name", "NAME", shrink=None),
                Column("transport", "TRANSPORT", shrink=None),
                Column("status", "STATUS", shrink=None),
                Column("tools", "TOOLS", shrink=None),
                Column("workers", "WORKERS", shrink=None),
                Column("reason", "REASON", min=0),
            ],
            rows,
            width,
        )
    elif args.command == "reload":
        from agent_mesh.mesh_health import reload_view

        body = mesh.call("POST", "/reload")
        print(
            json.dumps(body, indent=2) if args.json else reload_view(body),
            file=sys.stderr if body.get("status") == "invalid" and not args.json else sys.stdout,
        )
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


def tool_note(tool: dict[str, Any]) -> str:
    """`changed (block)` for a tool held by pinning, `flagged: <phrases>` for a description
    with injection phrases; "" otherwise."""
    pin = tool.get("pin")
    pin = pin if isinstance(pin, dict) else {}
    notes = [f"changed ({pin.get('mode')})"] if pin.get("status") == "changed" else []
    if tool.get("injection_phrases"):
        notes.append("flagged: " + ", ".join(map(str, tool["injection_phrases"])))
    return "; ".join(notes)


def show(approval: dict[str, Any], width: int) -> str:
    fields = [
        "id",
        "status",
        "agent_id",
        "tool",
        "params",
        "policy_rule",
        "created_at",
        "expires_at",
        "resolved_by",
        "reasoning",
        "injection_risk",
    ]
    lines = []
    for key in fields:
        value = approval.get(key)
        if value is None or value == "":
            continue
        shown = clock(value) if key.endswith("_at") else text(value)
        lines.append(f"{key:<14} {shown}")
    grants = approval.get("active_grants") or []
    if grants:
        lines.append(
            f"{'active_grants':<14} "
            + "; ".join(f"{id8(g.get('id'))} {text(g.get('tools'))}" for g in grants)
        )
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
