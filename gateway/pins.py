"""Tool pinning (docs/pinning.md): the definition of every MCP server's tool is pinned the first
time a front-end sees it (trust on first use); a definition that differs later is a *change*,
held by the server's `pinning.mode` until an operator accepts it (`POST /tools/{name}/accept`).

Pins and changes live in `pins.db` (SQLite, WAL) in the state directory, not in the approval
service: every front-end (the HTTP gateway, each stdio connector) reads them on its call path
from memory, and a shared file keeps them across restarts without a bus round trip per call.
Each front-end records what its catalogue lists (`observe`, on every refresh whose tools
changed) and re-reads the unaccepted changes on every refresh (`reload`); a change accepted
through another process (several gateway processes, a stdio connector) is lifted here at once:
a held call asks the file again (`hold`), and the catalogue refreshes on the `tool.*` events.

Only the process that first records a change announces it (the row is written in one
`BEGIN IMMEDIATE`): a log warning, the bus event `tool.<server>.changed`, and the audit event
`tool.changed` in the trace file. An acceptance is the audit event `tool.accepted` and the event
`tool.<server>.accepted`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.audit_outbox import AuditOutbox, audit_event
from policy.pinning import PinMode, definition, diff, fingerprint, injection_phrases

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    tool TEXT PRIMARY KEY, server TEXT NOT NULL, fingerprint TEXT NOT NULL,
    definition TEXT NOT NULL, pinned_at REAL NOT NULL, pinned_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    tool TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, definition TEXT NOT NULL,
    seen_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Change:
    """A tool whose listed definition differs from its pin, not accepted yet."""

    tool: str  # canonical `<server>.<tool>`
    server: str
    mode: PinMode
    old: dict[str, Any]  # the pinned definition
    new: dict[str, Any]  # the definition listed now
    old_fingerprint: str
    new_fingerprint: str
    seen_at: float

    @property
    def diff(self) -> list[str]:
        return diff(self.old, self.new)

    def line(self) -> str:
        """One line for /health and the logs."""
        held = {"block": "calls refused", "approve": "calls need approval", "warn": "warned"}
        return (
            f"{self.tool} changed since pinned ({held[self.mode]} until `mesh tools accept "
            f"{self.tool}`): " + "; ".join(self.diff or ["definition changed"])
        )

    def view(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "server": self.server,
            "mode": self.mode,
            "old_fingerprint": self.old_fingerprint,
            "new_fingerprint": self.new_fingerprint,
            "seen_at": self.seen_at,
            "diff": self.diff,
            "line": self.line(),
        }


class Pins:
    def __init__(
        self,
        path: Path,
        modes: Mapping[str, PinMode],
        audit: AuditOutbox | None = None,
        publish: Publish | None = None,
    ) -> None:
        """`modes`: each pinned server's `pinning.mode` (MCP servers; other sources unpinned)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self.modes = dict(modes)
        self.audit = audit
        self.publish = publish
        self.held: dict[str, Change] = {}  # canonical tool → its unaccepted change
        self._seen: dict[str, str] = {}  # canonical tool → fingerprint this process recorded
        self._flags: dict[str, tuple[str, list[str]]] = {}  # tool → (fingerprint, phrases)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def observe(self, server: str, tools: Mapping[str, Mapping[str, Any]]) -> None:
        """Record the tools a server lists now (canonical name → definition): pin the new ones,
        record a change for those that differ from their pin, drop the change of one listed as
        pinned again."""
        if server not in self.modes:
            return
        recorded = False
        for tool, listed in tools.items():
            print_ = fingerprint(listed)
            if self._seen.get(tool) == print_:
                continue
            self._seen[tool] = print_
            recorded = True
            if self._record(server, tool, definition(listed), print_):
                self._tell("changed", self.held[tool], "mesh")
        if recorded:
            self.reload()

    def _record(self, server: str, tool: str, new: dict[str, Any], print_: str) -> bool:
        """Whether this is a change no front-end recorded before (to announce)."""
        now = time.time()
        with self._write() as db:
            pin = db.execute("SELECT fingerprint FROM pins WHERE tool = ?", (tool,)).fetchone()
            if pin is None:
                db.execute(
                    "INSERT INTO pins VALUES (?,?,?,?,?,?)",
                    (tool, server, print_, json.dumps(new), now, "first sight"),
                )
                log.info("pinned %s (first sight) %s", tool, print_[:12])
                return False
            if pin[0] == print_:
                db.execute("DELETE FROM changes WHERE tool = ?", (tool,))
                return False
            known = db.execute("SELECT fingerprint FROM changes WHERE tool = ?", (tool,)).fetchone()
            if known is not None and known[0] == print_:
                return False  # another front-end recorded it
            db.execute(
                "INSERT OR REPLACE INTO changes VALUES (?,?,?,?)",
                (tool, print_, json.dumps(new), now),
            )
            self.reload()
            self._audit("changed", self.held[tool], "mesh")  # in the change's commit
        return True

    def reload(self) -> None:
        """The unaccepted changes, as stored (another front-end may have accepted one)."""
        rows = self.db.execute(
            "SELECT c.tool, p.server, p.definition, c.definition, p.fingerprint, c.fingerprint,"
            " c.seen_at FROM changes c JOIN pins p ON p.tool = c.tool"
        ).fetchall()
        self.held = {
            row[0]: Change(
                row[0],
                row[1],
                self.modes.get(row[1], "approve"),
                json.loads(row[2]),
                json.loads(row[3]),
                row[4],
                row[5],
                row[6],
            )
            for row in rows
        }

    def hold(self, tool: str) -> Change | None:
        """The unaccepted change of `tool` (canonical name) whose mode holds its calls. A held
        call asks pins.db once more (another gateway process may have accepted the change a
        moment ago); a call of a tool not held costs a dict lookup."""
        change = self.held.get(tool)
        if change is None or change.mode == "warn":
            return None
        still = self.db.execute(
            "SELECT 1 FROM changes WHERE tool = ? AND fingerprint = ?",
            (tool, change.new_fingerprint),
        ).fetchone()
        if still is None:
            self.reload()
            return self.hold(tool) if tool in self.held else None
        return change

    def pinned(self, tool: str) -> dict[str, Any] | None:
        """The pinned definition of `tool` while a change of it is held (MCP clients are shown
        that one, not the new description), else None."""
        change = self.hold(tool)
        return change.old if change is not None else None

    def accept(self, tool: str, by: str, expected: str | None = None) -> Change:
        """Pin the changed definition of `tool`. LookupError: no change of it to accept;
        ValueError: the change is not the one `expected` (a fingerprint) names."""
        with self._write() as db:
            row = db.execute(
                "SELECT fingerprint, definition FROM changes WHERE tool = ?", (tool,)
            ).fetchone()
            if row is None:
                raise LookupError(tool)
            if expected is not None and not row[0].startswith(expected):
                raise ValueError(row[0])
            self.reload()
            change = self.held[tool]
            db.execute(
                "UPDATE pins SET fingerprint = ?, definition = ?, pinned_at = ?, pinned_by = ?"
                " WHERE tool = ?",
                (row[0], row[1], time.time(), by, tool),
            )
            db.execute("DELETE FROM changes WHERE tool = ?", (tool,))
            self._audit("accepted", change, by)
        self.held.pop(tool, None)
        self._tell("accepted", change, by)
        return change

    def status(self, tool: str, server: str, listed: Mapping[str, Any]) -> dict[str, Any]:
        """For /tools and `mesh.catalog`: the tool's pin (`pinned`, `changed`), and the
        injection phrases its description carries (left out when none)."""
        print_ = fingerprint(listed)
        cached = self._flags.get(tool)
        if cached is None or cached[0] != print_:
            cached = self._flags[tool] = (print_, injection_phrases(listed))
        out: dict[str, Any] = {}
        if server in self.modes:
            change = self.held.get(tool)
            out["pin"] = {
                "status": "changed" if change is not None else "pinned",
                "fingerprint": print_,
                **({"mode": change.mode, "diff": change.diff} if change is not None else {}),
            }
        if cached[1]:
            out["injection_phrases"] = cached[1]
        return out

    def _audit(self, what: str, change: Change, actor: str) -> None:
        """The audit event, in the transaction that records the change or its acceptance (the
        outbox writes on this connection: a crash keeps both or neither)."""
        if self.audit is not None:
            self.audit.add(audit_event(f"tool.{what}", actor, change.tool, _detail(change)))

    def _tell(self, what: str, change: Change, actor: str) -> None:
        """The log line and the bus event, once stored."""
        if what == "changed":
            log.warning("%s", change.line())
        else:
            log.info("%s: new definition accepted by %s", change.tool, actor)
        if self.publish is not None:
            self.publish(f"tool.{change.server}.{what}", {"tool": change.tool, **_detail(change)})


def _detail(change: Change) -> dict[str, Any]:
    return {
        "server": change.server,
        "mode": change.mode,
        "old_fingerprint": change.old_fingerprint,
        "new_fingerprint": change.new_fingerprint,
        "diff": change.diff,
    }
