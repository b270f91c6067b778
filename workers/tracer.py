"""Trace writer: the one owner of trace storage — the JSONL `trace_file` and the SQLite index
behind `GET /traces`. Records arrive as acknowledged `traces` requests, so none is lost while
this process restarts: senders keep them until acknowledged, and recording is idempotent by
trace_id (a batch replayed after a lost ack is not written twice).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from bus.errors import bad_request
from bus.events import Publisher
from bus.messages import TRACES, TraceBatch, TraceQuery, TraceRecord
from bus.worker import BusWorker, Request
from policy.globs import glob_matches

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    session_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_agent ON traces (agent_id, seq);
CREATE INDEX IF NOT EXISTS traces_session ON traces (session_id, seq);
"""


class TraceStore:
    def __init__(self, db_path: Path, jsonl_path: Path | None) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.jsonl = None
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 — lives as long as the process

    def record(self, records: list[TraceRecord]) -> list[dict[str, Any]]:
        """Store what is new (idempotent by trace_id); return the records that were new, as maps."""
        lines, new = [], []
        self.db.execute("BEGIN")
        try:
            for rec in records:
                data = rec.dump()
                line = orjson.dumps(data, default=str).decode()
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO traces (trace_id, agent_id, tool, session_id, record) VALUES (?,?,?,?,?)",
                    (rec.trace_id, rec.agent_id, rec.tool, rec.session_id, line),
                )
                if cur.rowcount:
                    lines.append(line)
                    new.append(data)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self.jsonl is not None and lines:
            self.jsonl.write("\n".join(lines) + "\n")
            self.jsonl.flush()
        return new

    def query(self, q: TraceQuery) -> list[dict[str, Any]]:
        sql = "SELECT tool, record FROM traces"
        where, args = [], []
        if q.agent:
            where.append("agent_id = ?")
            args.append(q.agent)
        if q.session_id:
            where.append("session_id = ?")
            args.append(q.session_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        out: list[dict[str, Any]] = []
        for tool, record in self.db.execute(sql, args):
            if q.tool and not glob_matches(q.tool, tool):
                continue
            out.append(json.loads(record))
            if len(out) >= q.limit:
                break
        return out


    def sessions(self, limit: int) -> list[dict[str, Any]]:
        """One summary per session id, most recently active first."""
        rows = self.db.execute(
            "SELECT session_id, COUNT(*), MIN(seq), MAX(seq), GROUP_CONCAT(DISTINCT agent_id) FROM traces"
            " WHERE session_id != '' GROUP BY session_id ORDER BY MAX(seq) DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for session_id, calls, first, last, agents in rows:
            first_at = json.loads(self.db.execute("SELECT record FROM traces WHERE seq=?", (first,)).fetchone()[0])
            last_at = json.loads(self.db.execute("SELECT record FROM traces WHERE seq=?", (last,)).fetchone()[0])
            out.append({"session_id": session_id, "calls": calls, "agents": sorted(agents.split(",")),
                        "first_seen": first_at["timestamp"], "last_seen": last_at["timestamp"]})
        return out


class TraceService:
    def __init__(self, store: TraceStore, events: Publisher | None = None) -> None:
        self.store = store
        self.events = events

    async def handle(self, request: Request) -> Any:
        body = request.body
        op = body.get("op") if isinstance(body, dict) else None
        try:
            if op == "record":
                new = self.store.record(TraceBatch.model_validate(body).records)
                if self.events is not None:  # live watchers (mesh watch, dashboards)
                    for data in new:
                        self.events.publish(f"trace.{data['agent_id']}.recorded", data)
                return {"stored": len(new)}
            if op == "query":
                return {"traces": self.store.query(TraceQuery.model_validate(body))}
            if op == "sessions":
                return {"sessions": self.store.sessions(int(body.get("limit", 100)))}
        except ValidationError as exc:
            raise bad_request(f"traces: invalid {op}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        raise bad_request(f"traces: unknown op {op!r}")


async def run(endpoint: str, events_endpoint: str | None, db_path: Path, jsonl_path: Path | None) -> None:
    events = Publisher(events_endpoint) if events_endpoint is not None else None  # None: on another host
    service = TraceService(TraceStore(db_path, jsonl_path), events)
    # One at a time: SQLite has one writer, and ordering in the JSONL file follows arrival.
    await BusWorker(endpoint, TRACES, service.handle, capacity=1, slot="traces").run()
