"""Durable approval state in SQLite (WAL): approvals, grants, Level-1 decision memory, freezes.

Owned by the approval worker alone (one writer). Everything survives restarts: pending approvals
are still pending (or time out on start if their deadline passed), grants keep their expiry.
The audit outbox shares this connection (`AuditOutbox(client, store.db)`), so a change and its
audit event are written in one `transaction()`: a crash keeps both or neither.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bus.errors import bad_request, conflict, not_found

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, agent_id TEXT NOT NULL, tool TEXT NOT NULL,
    params TEXT NOT NULL, shape TEXT NOT NULL, session_id TEXT NOT NULL, trace_id TEXT NOT NULL,
    policy_rule TEXT NOT NULL, callback_url TEXT, created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    resolved_at REAL, resolved_by TEXT, reasoning TEXT, confidence REAL,
    replayed_at REAL  -- an approved call run later by approval.resolve: at most once
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created_at);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, tools TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, created_by TEXT NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS memory (
    agent_id TEXT NOT NULL, tool TEXT NOT NULL, shape TEXT NOT NULL, approvals INTEGER NOT NULL,
    PRIMARY KEY (agent_id, tool, shape)
);
CREATE TABLE IF NOT EXISTS freezes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
    thawed_at REAL, thawed_by TEXT
);
"""
MIN_PREFIX = 4


class StateStore:
    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # approvals and grants are decisions: keep them
        self.db.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction around what the block writes; inside another, part of it. The
        block must not await: the loop would run other operations inside the transaction."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- approvals -------------------------------------------------------------------------

    def create(
        self,
        *,
        agent: str,
        tool: str,
        params: dict[str, Any],
        shape: str,
        session_id: str,
        trace_id: str,
        policy_rule: str,
        callback_url: str | None,
        now: float,
        expires_at: float,
        status: str = "pending",
        resolved_by: str | None = None,
        reasoning: str | None = None,
    ) -> dict[str, Any]:
        approval_id = uuid.uuid4().hex
        self.db.execute(
            "INSERT INTO approvals (id, status, agent_id, tool, params, shape, session_id, "
            "trace_id, policy_rule,"
            " callback_url, created_at, expires_at, resolved_at, resolved_by, reasoning) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                approval_id,
                status,
                agent,
                tool,
                json.dumps(params),
                shape,
                session_id,
                trace_id,
                policy_rule,
                callback_url,
                now,
                expires_at,
                now if status != "pending" else None,
                resolved_by,
                reasoning,
            ),
        )
        return self.get(approval_id)

    def get(self, id_or_prefix: str) -> dict[str, Any]:
        """By full id or a unique prefix (≥ 4 characters); 404 unknown, 400 ambiguous."""
        if len(id_or_prefix) < MIN_PREFIX:
            raise bad_request(f"approval id {id_or_prefix!r} is too short (at least {MIN_PREFIX})")
        rows = self.db.execute(
            "SELECT * FROM approvals WHERE id LIKE ? || '%' LIMIT 6",
            (id_or_prefix.replace("%", "").replace("_", ""),),
        ).fetchall()
        if not rows:
            raise not_found(f"no approval {id_or_prefix}")
        if len(rows) > 1:
            ids = ", ".join(r["id"][:12] for r in rows)
            raise bad_request(f"approval id prefix {id_or_prefix!r} is ambiguous ({ids}…)")
        return _approval(rows[0])

    def list_approvals(
        self, status: str | None = None, agent: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM approvals", []
        where = []
        if status:
            where.append("status = ?")
            args.append(status)
        if agent:
            where.append("agent_id = ?")
            args.append(agent)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        return [_approval(r) for r in self.db.execute(sql, (*args, limit))]

    def resolve(
        self,
        approval_id: str,
        status: str,
        resolved_by: str,
        reasoning: str | None,
        confidence: float | None,
        now: float,
    ) -> dict[str, Any]:
        """pending → approved | denied | timeout; 409 when it was already resolved."""
        current = self.get(approval_id)
        cur = self.db.execute(
            "UPDATE approvals SET status=?, resolved_at=?, resolved_by=?, reasoning=?, confidence=?"
            " WHERE id=? AND status='pending'",
            (status, now, resolved_by, reasoning, confidence, current["id"]),
        )
        if cur.rowcount == 0:
            raise conflict(f"approval {current['id'][:8]} is already {current['status']}")
        return self.get(current["id"])

    def claim_replay(self, approval_id: str, now: float) -> dict[str, Any]:
        """Mark an approved approval as replayed; 409 if it is not approved or was replayed."""
        current = self.get(approval_id)
        cur = self.db.execute(
            "UPDATE approvals SET replayed_at=? WHERE id=? AND status='approved'"
            " AND replayed_at IS NULL",
            (now, current["id"]),
        )
        if cur.rowcount == 0:
            state = "already replayed" if current["replayed_at"] else current["status"]
            raise conflict(f"approval {current['id'][:8]} cannot be replayed: {state}")
        return self.get(current["id"])

    def due(self, now: float) -> list[str]:
        return [
            r["id"]
            for r in self.db.execute(
                "SELECT id FROM approvals WHERE status='pending' AND expires_at <= ?", (now,)
            )
        ]

    # -- grants ----------------------------------------------------------------------------

    def grant_create(
        self, agent: str, tools: list[str], now: float, expires_at: float, created_by: str
    ) -> dict[str, Any]:
        grant_id = uuid.uuid4().hex
        self.db.execute(
            "INSERT INTO grants (id, agent, tools, created_at, expires_at, created_by) VALUES "
            "(?,?,?,?,?,?)",
            (grant_id, agent, json.dumps(tools), now, expires_at, created_by),
        )
        return self.grant_get(grant_id)

    def grant_get(self, id_or_prefix: str) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT * FROM grants WHERE id LIKE ? || '%' LIMIT 2",
            (id_or_prefix.replace("%", "").replace("_", ""),),
        ).fetchall()
        if len(id_or_prefix) < MIN_PREFIX or not rows:
            raise not_found(f"no grant {id_or_prefix}")
        if len(rows) > 1:
            raise bad_request(f"grant id prefix {id_or_prefix!r} is ambiguous")
        return _grant(rows[0])

    def grants_active(self, now: float, agent: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM grants WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at",
            (now,),
        )
        grants = [_grant(r) for r in rows]
        if agent is not None:
            from policy.globs import glob_matches

            grants = [g for g in grants if glob_matches(g["agent"], agent)]
        return grants

    def grant_revoke(self, grant_id: str, now: float) -> dict[str, Any]:
        grant = self.grant_get(grant_id)
        if grant["revoked_at"] is not None:
            # Go forgets a revoked grant: revoking it again is 404, not a conflict.
            raise not_found(f"grant {grant['id'][:8]} is already revoked")
        self.db.execute("UPDATE grants SET revoked_at=? WHERE id=?", (now, grant["id"]))
        return self.grant_get(grant["id"])

    # -- freezes (the kill switch) ---------------------------------------------------------

    def freeze_create(
        self, kind: str, target: str, reason: str, now: float, created_by: str
    ) -> dict[str, Any]:
        freeze_id = uuid.uuid4().hex
        self.db.execute(
            "INSERT INTO freezes (id, kind, target, reason, created_at, created_by) VALUES "
            "(?,?,?,?,?,?)",
            (freeze_id, kind, target, reason, now, created_by),
        )
        return self.freeze_get(freeze_id)

    def freeze_get(self, id_or_prefix: str) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT * FROM freezes WHERE id LIKE ? || '%' LIMIT 2",
            (id_or_prefix.replace("%", "").replace("_", ""),),
        ).fetchall()
        if len(id_or_prefix) < MIN_PREFIX or not rows:
            raise not_found(f"no freeze {id_or_prefix}")
        if len(rows) > 1:
            raise bad_request(f"freeze id prefix {id_or_prefix!r} is ambiguous")
        return _freeze(rows[0])

    def freezes_active(self) -> list[dict[str, Any]]:
        """Oldest first (the first that stops a call names it)."""
        rows = self.db.execute("SELECT * FROM freezes WHERE thawed_at IS NULL ORDER BY seq")
        return [_freeze(r) for r in rows]

    def freeze_revision(self) -> int:
        """Grows by one with each freeze and each thaw: which of two lists of freezes is newer."""
        row = self.db.execute("SELECT COUNT(*) + COUNT(thawed_at) FROM freezes").fetchone()
        return int(row[0])

    def freeze_thaw(self, freeze_id: str, now: float, thawed_by: str) -> dict[str, Any]:
        freeze = self.freeze_get(freeze_id)
        if freeze["thawed_at"] is not None:
            raise not_found(f"freeze {freeze['id'][:8]} is already thawed")
        self.db.execute(
            "UPDATE freezes SET thawed_at=?, thawed_by=? WHERE id=?", (now, thawed_by, freeze["id"])
        )
        return self.freeze_get(freeze["id"])

    # -- Level-1 memory --------------------------------------------------------------------

    def memory_count(self, agent: str, tool: str, shape: str) -> int:
        row = self.db.execute(
            "SELECT approvals FROM memory WHERE agent_id=? AND tool=? AND shape=?",
            (agent, tool, shape),
        ).fetchone()
        return int(row[0]) if row else 0

    def memory_record(self, agent: str, tool: str, shape: str, approved: bool) -> None:
        """A human approval adds one; a deny resets the count to zero."""
        self.db.execute(
            "INSERT INTO memory (agent_id, tool, shape, approvals) VALUES (?,?,?,?) ON CONFLICT "
            "(agent_id, tool, shape)"
            " DO UPDATE SET approvals = CASE WHEN ? THEN approvals + 1 ELSE 0 END",
            (agent, tool, shape, 1 if approved else 0, approved),
        )


def _approval(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out["params"])
    return out


def _grant(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["tools"] = json.loads(out["tools"])
    return out


def _freeze(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    del out["seq"]
    return out
