"""Trace writer: the one owner of trace storage — the JSONL `trace_file` and the SQLite index
behind `GET /traces`. Records arrive as acknowledged `traces` requests, so none is lost while
this process restarts: senders keep them until acknowledged, and recording is idempotent by
call (`call_key`: trace_id and span id; a batch replayed after a lost ack is not written twice).

A call waiting for approval is recorded twice with one trace_id: first provisionally
(`approval_status: "pending"`), then final. The final record replaces the provisional one in
place (same position in `/traces`); nothing replaces a final record, so replays are harmless.
The JSONL file is append-only: there the later line of a trace_id supersedes the earlier.

Every line of the JSONL file is hash-chained (workers/audit_chain.py): call records and the audit
events (`AuditEvent`: approvals resolved, grants, ...) that arrive as `audit` requests. Hashing
happens here, after the caller has its answer: the call path never waits on it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bus import json_values
from bus.errors import bad_request
from bus.events import Publisher
from bus.messages import TRACES, AuditBatch, AuditEvent, TraceBatch, TraceQuery, TraceRecord
from bus.worker import BusWorker, Request
from mesh_config.model import MetricsConfig
from policy.globs import glob_matches
from workers.audit_chain import ChainFile, chained

if TYPE_CHECKING:
    from observe.call_metrics import CallMetrics
    from observe.otel_export import SpanExport
    from workers.audit_checkpoint import Checkpoints

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,  -- the call's key (call_key): trace_id, plus its span id if any
    agent_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    session_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_agent ON traces (agent_id, seq);
CREATE INDEX IF NOT EXISTS traces_session ON traces (session_id, seq);
CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
"""


PENDING = "pending"
# GET /health's `traces`: Go's Store.Stats() keys. Go counts as `errors` the entries with an error,
# and its traces of a policy deny or an approval denied / timed out carry none: ours name the
# reason, so those (403, 408) are left out of `errors` to count what Go counts.
_STATS_SQL = """SELECT COUNT(*),
    TOTAL(json_extract(record, '$.policy') = 'allow'),
    TOTAL(json_extract(record, '$.policy') = 'deny'),
    TOTAL(json_extract(record, '$.policy') = 'human_approval'),
    TOTAL(COALESCE(json_extract(record, '$.error'), '') != ''
          AND json_extract(record, '$.status_code') NOT IN (403, 408)),
    TOTAL(json_extract(record, '$.estimated_input_tokens')),
    TOTAL(json_extract(record, '$.estimated_output_tokens'))
    FROM traces"""
STATS_KEYS = (
    "total",
    "allowed",
    "denied",
    "human_approval",
    "errors",
    "estimated_input_tokens",
    "estimated_output_tokens",
)


def _contribution(data: dict[str, Any]) -> dict[str, int]:
    policy = data.get("policy")
    return {
        "total": 1,
        "allowed": int(policy == "allow"),
        "denied": int(policy == "deny"),
        "human_approval": int(policy == "human_approval"),
        "errors": int(bool(data.get("error")) and data.get("status_code") not in (403, 408)),
        "estimated_input_tokens": int(data.get("estimated_input_tokens") or 0),
        "estimated_output_tokens": int(data.get("estimated_output_tokens") or 0),
    }


def call_key(rec: TraceRecord) -> str:
    """What makes a record one call: its trace id and, since several calls of an agent may share
    the agent's trace (W3C traceparent), its own span id. A record without one (an older journal)
    is keyed by its trace id alone, as before. Replays and the final record of a waiting call
    carry the same span id, so they are the same call."""
    span_id = (rec.span or {}).get("id")
    return f"{rec.trace_id}:{span_id}" if isinstance(span_id, str) and span_id else rec.trace_id


class TraceStore:
    def __init__(
        self, db_path: Path, jsonl_path: Path | None, rotate_bytes: int | None = None
    ) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        # Counted once here, then kept up to date by record(): /health asks often.
        self.stats = dict(
            zip(STATS_KEYS, (int(n) for n in self.db.execute(_STATS_SQL).fetchone()), strict=True)
        )
        # The hash-chained trace file (None: no trace_file, no chain); lives as long as the process
        self.chain = ChainFile(jsonl_path, rotate_bytes) if jsonl_path is not None else None

    def record(self, records: list[TraceRecord]) -> list[dict[str, Any]]:
        """Store what is new (idempotent by trace_id; a final record replaces a provisional one);
        return the records that were stored, as maps."""
        lines: list[bytes] = []
        new = []
        counted: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []  # (replaced, stored)
        chain = self.chain
        head = chain.head if chain is not None else ""
        self.db.execute("BEGIN")
        try:
            for rec in records:
                data = rec.dump()
                raw, digest = self._line(data, head)
                line = raw.decode()
                key = call_key(rec)
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO traces (trace_id, agent_id, tool, session_id, record) "
                    "VALUES (?,?,?,?,?)",
                    (key, rec.agent_id, rec.tool, rec.session_id, line),
                )
                if cur.rowcount:
                    counted.append((None, data))
                elif rec.approval_status != PENDING and (old := self._provisional(key)) is not None:
                    self.db.execute("UPDATE traces SET record = ? WHERE trace_id = ?", (line, key))
                    counted.append((old, data))
                else:
                    continue
                lines.append(raw)
                head = digest
                new.append(data)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        for old, data in counted:
            replaced = _contribution(old) if old is not None else {}
            for key, n in _contribution(data).items():
                self.stats[key] += n - replaced.get(key, 0)
        if chain is not None and lines:
            chain.append(lines, head)
        return new

    def audit(self, events: list[AuditEvent]) -> list[dict[str, Any]]:
        """Store the audit events not stored yet (idempotent by id), chained into the trace file
        like call records; return them as written."""
        lines: list[bytes] = []
        new = []
        chain = self.chain
        head = chain.head if chain is not None else ""
        self.db.execute("BEGIN")
        try:
            for event in events:
                data = event.dump()
                raw, digest = self._line(data, head)
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO audit_events (id, record) VALUES (?,?)",
                    (event.id, raw.decode()),
                )
                if cur.rowcount:
                    lines.append(raw)
                    head = digest
                    new.append(data)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if chain is not None and lines:
            chain.append(lines, head)
        return new

    def _line(self, data: dict[str, Any], head: str) -> tuple[bytes, str]:
        """`data`'s line and hash: chained after `head` when there is a trace file (`data` gets
        prev_hash and hash: stored and published as written), else plain JSON."""
        if self.chain is not None:
            return chained(data, head)
        return json_values.dumps(data), ""

    def close(self) -> None:
        if self.chain is not None:
            self.chain.close()
        self.db.close()

    def _provisional(self, trace_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT record FROM traces WHERE trace_id = ?", (trace_id,)
        ).fetchone()
        stored: dict[str, Any] | None = json.loads(row[0]) if row else None
        return stored if stored is not None and stored.get("approval_status") == PENDING else None

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
        """One summary per session id, most recently active first: Go's SessionSummary
        (session_id, agent_id = the first agent, event_count, first_seen, last_seen, tools),
        plus `agents` (every agent of the session)."""
        rows = self.db.execute(
            "SELECT session_id, COUNT(*), MIN(seq), MAX(seq), GROUP_CONCAT(DISTINCT agent_id),"
            " GROUP_CONCAT(DISTINCT tool) FROM traces"
            " WHERE session_id != '' GROUP BY session_id ORDER BY MAX(seq) DESC LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for session_id, calls, first, last, agents, tools in rows:
            first_at = json.loads(
                self.db.execute("SELECT record FROM traces WHERE seq=?", (first,)).fetchone()[0]
            )
            last_at = json.loads(
                self.db.execute("SELECT record FROM traces WHERE seq=?", (last,)).fetchone()[0]
            )
            out.append(
                {
                    "session_id": session_id,
                    "agent_id": first_at["agent_id"],
                    "event_count": calls,
                    "first_seen": first_at["timestamp"],
                    "last_seen": last_at["timestamp"],
                    "tools": sorted(tools.split(",")),
                    "agents": sorted(agents.split(",")),
                }
            )
        return out


class TraceService:
    def __init__(
        self,
        store: TraceStore,
        events: Publisher | None = None,
        metrics: CallMetrics | Callable[[], CallMetrics] | None = None,
        spans: SpanExport | None = None,
    ) -> None:
        self.store = store
        self.events = events
        # Every call of the tree is counted here (observe/call_metrics.py); given as a factory it is
        # made at the first request (prometheus-client is imported then, not while restarting).
        self._metrics = metrics
        self.spans = (
            spans  # and exported to OpenTelemetry (observe/otel_export.py): queued, never awaited
        )

    @property
    def metrics(self) -> CallMetrics | None:
        if callable(self._metrics):
            self._metrics = self._metrics()
        return self._metrics

    async def handle(self, request: Request) -> Any:
        body = request.body
        op = body.get("op") if isinstance(body, dict) else None
        try:
            if op == "record":
                new = self.store.record(TraceBatch.model_validate(body).records)
                for data in new:
                    if (metrics := self.metrics) is not None:
                        metrics.observe(data)
                    if self.spans is not None:
                        self.spans.export(data)
                if self.events is not None:  # live watchers (mesh watch, dashboards), updates too
                    for data in new:
                        self.events.publish(f"trace.{data['agent_id']}.recorded", data)
                return {"stored": len(new)}
            if op == "audit":
                stored = self.store.audit(AuditBatch.model_validate(body).events)
                if self.events is not None:
                    for data in stored:
                        self.events.publish(f"audit.{data['action']}", data)
                return {"stored": len(stored)}
            if op == "query":
                return {"traces": self.store.query(TraceQuery.model_validate(body))}
            if op == "sessions":
                return {"sessions": self.store.sessions(int(body.get("limit", 100)))}
            if op == "stats":
                return dict(self.store.stats)
            if op == "metrics":  # GET /metrics: the calls' counters, Prometheus text format
                return {
                    "text": metrics.exposition() if (metrics := self.metrics) is not None else ""
                }
        except ValidationError as exc:
            raise bad_request(
                f"traces: invalid {op}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from None
        raise bad_request(f"traces: unknown op {op!r}")


def _call_metrics(max_agents: int, max_tools: int) -> CallMetrics:
    from observe.call_metrics import CallMetrics  # prometheus-client: imported at first use

    return CallMetrics(max_agents, max_tools)


async def run(
    endpoint: str,
    events_endpoint: str | None,
    db_path: Path,
    jsonl_path: Path | None,
    metrics: MetricsConfig | None = None,
    otel_endpoint: str | None = None,
    rotate_bytes: int | None = None,
    checkpoints: tuple[Path, float] | None = None,
) -> None:
    """`checkpoints`: (signing key, seconds) — sign checkpoints of the chain that often and at
    each rotation (`audit.checkpoint_every`; workers/audit_checkpoint.py)."""
    events = (
        Publisher(events_endpoint) if events_endpoint is not None else None
    )  # None: on another host
    counting: Callable[[], CallMetrics] | None = None
    if metrics is not None and metrics.enabled:
        counting = functools.partial(_call_metrics, metrics.max_agents, metrics.max_tools)
    store = TraceStore(db_path, jsonl_path, rotate_bytes)
    service = TraceService(store, events, counting)
    signing: Checkpoints | None = None
    if checkpoints is not None and store.chain is not None:
        from workers.audit_checkpoint import Checkpoints, SigningKeyError, load_signing_key

        try:
            key = load_signing_key(checkpoints[0])
        except SigningKeyError as exc:
            raise SystemExit(f"trace writer: {exc}") from None
        signing = Checkpoints(store.chain, key, checkpoints[1])
        signing.start()
    spans = None
    if otel_endpoint is not None:  # the SDK is imported only when export is on

        def counted(ok: bool, n: int) -> None:
            if (made := service.metrics) is not None:
                made.spans_exported(ok, n)

        from observe.otel_export import SpanExport

        spans = SpanExport(otel_endpoint, counted=counted)
        service.spans = spans
    try:
        # One at a time: SQLite has one writer, and ordering in the JSONL file follows arrival.
        await BusWorker(endpoint, TRACES, service.handle, capacity=1, slot="traces").run()
    finally:
        if signing is not None:  # and where the chain ends now, on a clean stop
            await signing.stop()
        if spans is not None:  # flush what is queued (bounded by the export timeout)
            await asyncio.to_thread(spans.shutdown)
