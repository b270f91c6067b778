"""`mesh freeze`, `mesh thaw`, `mesh freezes`: the kill switch from the command line, over the
mesh's `/freezes` routes (README, Kill switch).

    mesh freeze agent claude --reason "leaking secrets"
    mesh freeze tool 'github.delete_*'
    mesh freeze --all --reason incident
    mesh thaw 1a2b3c4d            # one freeze, by id (or prefix)
    mesh thaw agent claude        # every freeze of that agent (the same target, as frozen)
    mesh thaw --all               # the freezes of everything
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from agent_mesh.mesh_client import Mesh, MeshError, id8, items
from agent_mesh.tables import Column, clock, render

FREEZES = [
    Column("id", "ID", shrink=None),
    Column("what", "FROZEN", shrink=None),
    Column("since", "SINCE", shrink=None),
    Column("created_by", "BY", shrink=None),
    Column("reason", "REASON", min=0),
]
COMMANDS = ("freeze", "thaw", "freezes")


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    command("freezes", "freezes in force (the kill switch)")
    freeze = command(
        "freeze",
        "refuse every new call of an agent, of tools, or of everything, at once, until thawed",
    )
    _target(freeze, "freeze")
    freeze.add_argument("--reason", default="", help="why: told to every refused caller")
    thaw = command("thaw", "lift a freeze: by id, or every freeze of a target (as frozen)")
    _target(thaw, "thaw", by_id=True)


def _target(parser: argparse.ArgumentParser, verb: str, by_id: bool = False) -> None:
    first = "agent, tool" + (", or a freeze id" if by_id else "")
    parser.add_argument(
        "kind", nargs="?", metavar="agent|tool" + ("|ID" if by_id else ""), help=first
    )
    parser.add_argument("target", nargs="?", help="the agent id (or glob), or the tool glob")
    parser.add_argument("--all", action="store_true", help=f"{verb} every call of every agent")


def what(freeze: dict[str, Any]) -> str:
    kind = freeze.get("kind")
    return "everything" if kind == "all" else f"{kind} {freeze.get('target')}"


def _chosen(args: argparse.Namespace, by_id: bool) -> tuple[str, str]:
    """(kind, target) of the command line: ("all", "*"), ("agent", X), ("tool", G), ("id", ID)."""
    if args.all and args.kind is None:
        return "all", "*"
    if not args.all and args.kind in ("agent", "tool") and args.target:
        return args.kind, args.target
    if by_id and not args.all and args.kind and args.target is None:
        return "id", args.kind
    usage = "agent <id>, tool <glob> or --all" + (", or a freeze id" if by_id else "")
    raise MeshError(f"say what: {usage}")


def run(mesh: Mesh, args: argparse.Namespace, width: int) -> tuple[Any, str]:
    """(the API's answer, what to print) of one of COMMANDS."""
    if args.command == "freezes":
        body = mesh.call("GET", "/freezes")
        rows = [
            {**f, "id": id8(f.get("id")), "what": what(f), "since": clock(f.get("created_at"))}
            for f in items(body)
        ]
        return body, render(FREEZES, rows, width) if rows else "no freezes"
    if args.command == "freeze":
        kind, target = _chosen(args, by_id=False)
        request: dict[str, Any] = {"all": True} if kind == "all" else {kind: target}
        request |= {"reason": args.reason, "created_by": f"mesh:{os.environ.get('USER', 'human')}"}
        body = mesh.call("POST", "/freezes", json=request)
        denied = body.get("denied_approvals") or 0
        view = (
            f"freeze {id8(body.get('id'))}: {what(body)} frozen (mesh thaw {id8(body.get('id'))})"
        )
        return body, view + (f"; {denied} pending approvals denied" if denied else "")
    kind, target = _chosen(args, by_id=True)
    ids = [target]
    if kind != "id":
        ids = [
            f["id"]
            for f in items(mesh.call("GET", "/freezes"))
            if f.get("kind") == kind and f.get("target") == target
        ]
        if not ids:
            shown = "everything" if kind == "all" else f"{kind} {target}"
            raise MeshError(f"no freeze of {shown} (mesh freezes lists them)")
    thawed = [mesh.call("DELETE", f"/freezes/{i}") for i in ids]
    lines = [f"freeze {id8(t.get('id'))} thawed: {what(t.get('freeze') or {})}" for t in thawed]
    return thawed if len(thawed) > 1 else thawed[0], "\n".join(lines)
