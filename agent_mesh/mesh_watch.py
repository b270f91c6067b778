"""`mesh watch`: the live approval queue in a terminal. The oldest approval not skipped is the
current one: `a` approves it, `d` denies it (both ask for an optional reason, Enter for none,
Esc then Enter to cancel), `s` skips it (it stays listed, marked skipped), `u` brings the
skipped ones back, `q` quits. A mesh that stops answering is shown, and watched until it is back.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from typing import Any

from agent_mesh.mesh_client import (
    PENDING,
    Mesh,
    MeshError,
    columns_of_terminal,
    items,
    pending_rows,
    resolution_line,
    resolve,
)
from agent_mesh.tables import Column, render

REFRESH = 1.0  # s between reads of the queue
CLEAR = "\x1b[H\x1b[2J"
PAST = {"approve": "approved", "deny": "denied"}
MARKED = [*PENDING[:1], Column("mark", "", min=0, shrink=None), *PENDING[1:]]


def screen(
    url: str, pending: list[dict[str, Any]], skipped: set[str], message: str, width: int
) -> str:
    """What the terminal shows (pure: the tests read it too)."""
    rows = [
        {**row, "mark": "skipped" if row["id"] in skipped else ""} for row in pending_rows(pending)
    ]
    lines = [
        render(MARKED, rows, width, f"pending approvals at {url}")
        if rows
        else f"pending approvals at {url}"
    ]
    current = next((a for a in pending if a["id"] not in skipped), None)
    if current is not None:
        lines.append(
            f"{current['id'][:8]} {current.get('agent_id')} → {current.get('tool')}: "
            "a approve  d deny  s skip  q quit"
        )
    elif pending:
        ids = ", ".join(a["id"][:8] for a in pending)
        lines.append(
            f"{len(pending)} pending, all skipped ({ids}): u to show them again, q to quit"
        )
    else:
        lines.append("nothing pending: q to quit")
    if message:
        lines.append(message)
    return "\n".join(lines)


def _ask_reason(fd: int, cooked: list[Any], decision: str, approval_id: str) -> str | None:
    """A line typed in normal (echoing) mode; None when cancelled (Esc)."""
    sys.stdout.write(
        f"\nreason to {decision} {approval_id[:8]} (optional; Enter: none, Esc Enter: cancel): "
    )
    sys.stdout.flush()
    raw = termios.tcgetattr(fd)
    termios.tcsetattr(fd, termios.TCSADRAIN, cooked)
    try:
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            line += chunk
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, raw)
    answer = line.decode(errors="replace").strip("\r\n")
    if "\x1b" in answer:
        return None
    return answer.strip()


def watch(mesh: Mesh) -> None:
    if not sys.stdin.isatty():
        raise MeshError("needs a terminal (use `mesh pending` in scripts)")
    fd = sys.stdin.fileno()
    cooked = termios.tcgetattr(fd)
    skipped: set[str] = set()
    pending: list[dict[str, Any]] = []
    message = ""
    try:
        tty.setcbreak(fd)
        while True:
            try:
                pending = sorted(
                    items(mesh.call("GET", "/approvals", params={"status": "pending"})),
                    key=lambda a: str(a.get("created_at")),
                )
                problem = ""
            except MeshError as exc:
                problem = f"{exc} (retrying)"
            skipped &= {a["id"] for a in pending}  # resolved elsewhere: forget
            sys.stdout.write(
                CLEAR
                + screen(mesh.url, pending, skipped, problem or message, columns_of_terminal())
                + "\n"
            )
            sys.stdout.flush()
            ready, _, _ = select.select([fd], [], [], REFRESH)
            if not ready:
                continue
            key = os.read(fd, 1).decode(errors="replace").lower()
            current = next((a for a in pending if a["id"] not in skipped), None)
            if key == "q":
                return
            if key == "u":
                skipped.clear()
                message = ""
            elif current is not None and key in ("a", "d"):
                decision = "approve" if key == "a" else "deny"
                reason = _ask_reason(fd, cooked, decision, current["id"])
                if reason is None:
                    message = f"{current['id'][:8]}: not {PAST[decision]} (cancelled)"
                    continue
                try:
                    message = resolution_line(
                        resolve(mesh, current["id"], decision, reason or None)
                    )
                except MeshError as exc:
                    message = f"{current['id'][:8]}: {exc}"
            elif current is not None and key == "s":
                skipped.add(current["id"])
                message = f"{current['id'][:8]}: skipped"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, cooked)
