"""The supervisor's memory: every decision with its inputs, in SQLite (WAL). Recent decisions on
the same agent + tool are context for the model; `agent-mesh supervisor history` reads them; and
an approval decided once is not decided again after a restart of the supervisor."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    approval_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,        -- approve | deny | escalate
    by TEXT NOT NULL,            -- rule:<name> | model:<model> | none
    confidence REAL NOT NULL,
    reasoning TEXT NOT NULL,
    outcome TEXT NOT NULL,       -- resolved | already | gone | escalated | dry-run
    elapsed_ms REAL NOT NULL,
    injection_risk INTEGER NOT NULL,
    inputs TEXT NOT NULL         -- the approval view it was decided on (JSON)
);
CREATE INDEX IF NOT EXISTS decisions_agent_tool ON decisions (agent, tool, seq);
CREATE INDEX IF NOT EXISTS decisions_approval ON decisions (approval_id);
"""
FINAL = ("resolved", "already", "gone", "escalated")  # an approval with one of these is done


@dataclass(frozen=True)
class Record:
    approval_id: str
    agent: str
    tool: str
    action: str
    by: str
    confidence: float
    reasoning: str
    outcome: str
    elapsed_ms: float
    injection_risk: bool
    inputs: dict[str, Any]


class Memory:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, r: Record, at: float | None = None) -> None:
        self.db.execute(
            "INSERT INTO decisions (at, approval_id, agent, tool, action, by, confidence,"
            " reasoning, outcome, elapsed_ms, injection_risk, inputs)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                time.time() if at is None else at,
                r.approval_id,
                r.agent,
                r.tool,
                r.action,
                r.by,
                r.confidence,
                r.reasoning,
                r.outcome,
                r.elapsed_ms,
                int(r.injection_risk),
                json.dumps(r.inputs, default=str),
            ),
        )

    def done(self, approval_id: str) -> bool:
        """Decided before (resolved, or left to a human): not to be decided again."""
        marks = ",".join("?" * len(FINAL))
        row = self.db.execute(
            f"SELECT 1 FROM decisions WHERE approval_id = ? AND outcome IN ({marks}) LIMIT 1",
            (approval_id, *FINAL),
        ).fetchone()
        return row is not None

    def history(
        self, agent: str | None = None, tool: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Newest first."""
        where, args = [], []
        for column, value in (("agent", agent), ("tool", tool)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM decisions" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self.db.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(row) for row in rows]

    def context(self, agent: str, tool: str, limit: int) -> list[dict[str, Any]]:
        """What the model is shown: the latest decisions on this agent + tool, params included."""
        if limit <= 0:
            return []
        return [
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["at"])),
                "action": d["action"],
                "by": d["by"],
                "confidence": d["confidence"],
                "reasoning": d["reasoning"],
                "params": d["inputs"].get("params"),
            }
            for d in self.history(agent, tool, limit)
            if d["outcome"] != "dry-run"
        ]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["inputs"] = json.loads(out["inputs"])
    out["injection_risk"] = bool(out["injection_risk"])
    return out
