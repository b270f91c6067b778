"""The trace file's hash chain (workers/audit_chain.py) as the trace writer writes it, and its
check (workers/audit_verify.py): every kind of tampering named at its line; the chain goes on
across restarts and rotation; audit events are chained like call records."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from bus.messages import AuditEvent, TraceQuery, TraceRecord, trace_record
from workers import audit_chain
from workers.audit_chain import GENESIS
from workers.audit_verify import verify
from workers.tracer import TraceStore


def rec(i: int, **fields: Any) -> TraceRecord:
    return TraceRecord(
        **trace_record(
            trace_id=f"t{i}",
            agent_id="a",
            tool="fs.read",
            policy="allow",
            status_code=200,
            latency_ms=1,
            params={"path": f"/f{i}", "n": i, "é": [1.5, None, True]},
            **fields,
        )
    )


def write(tmp_path: Path, n: int, start: int = 0, **kw: Any) -> Path:
    store = TraceStore(tmp_path / "t.db", tmp_path / "t.jsonl", **kw)
    for i in range(start, start + n):
        store.record([rec(i)])
    store.close()
    return tmp_path / "t.jsonl"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_each_line_carries_prev_hash_and_the_hash_of_its_canonical_json(tmp_path: Path) -> None:
    path = write(tmp_path, 3)
    records = [json.loads(line) for line in lines_of(path)]
    assert records[0]["prev_hash"] == GENESIS
    for before, record in zip([None, *records], records, strict=False):
        if before is not None:
            assert record["prev_hash"] == before["hash"]
        # The definition in docs/audit.md, computed independently of the writer's code.
        body = {k: v for k, v in record.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == record["hash"]
    result = verify([path])
    assert result.error is None and result.records == 3 and result.head == records[-1]["hash"]


def test_the_index_and_the_file_hold_the_same_chained_record(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", tmp_path / "t.jsonl")
    (stored,) = store.record([rec(1)])
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert stored["hash"] == line["hash"] and stored["prev_hash"] == GENESIS
    assert store.query(TraceQuery()) == [line]  # GET /traces shows the hashes too
    store.close()


def test_a_restart_goes_on_from_the_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, 3)
    last = json.loads(lines_of(path)[-1])["hash"]
    write(tmp_path, 2, start=3)
    records = [json.loads(line) for line in lines_of(path)]
    assert len(records) == 5 and records[3]["prev_hash"] == last
    assert verify([path]).error is None


def test_rotation_by_size_goes_on_in_the_next_file(tmp_path: Path) -> None:
    path = write(tmp_path, 12, rotate_bytes=1500)
    rotated = audit_chain.rotated_files(path)
    assert len(rotated) >= 3
    assert [p.name for p in rotated] == [f"t.jsonl.{i:06d}" for i in range(1, len(rotated) + 1)]
    files = [*rotated, path]
    assert sum(len(lines_of(p)) for p in files) == 12
    for older, newer in itertools.pairwise(files):
        assert (
            json.loads(lines_of(newer)[0])["prev_hash"] == json.loads(lines_of(older)[-1])["hash"]
        )
        assert older.stat().st_size <= 1500
    result = verify(files)
    assert result.error is None and result.records == 12 and result.files == len(files)
    # Out of order, or one left out: named at the first line of the file that does not follow.
    assert verify([rotated[1], rotated[0]]).error == (
        f"{rotated[1]}:1: does not start the chain (prev_hash "
        f"{json.loads(lines_of(rotated[1])[0])['prev_hash'][:16]}…): its first records were "
        "deleted, or it continues a rotated file — give the earlier files first, oldest first "
        "(or --after <prev_hash> to start there)"
    )
    assert verify([rotated[0], rotated[2]]).error == (
        f"{rotated[2]}:1: does not continue the previous file: that file was truncated, records "
        "between them deleted, or the files are out of order (oldest first)"
    )
    after = json.loads(lines_of(rotated[0])[-1])["hash"]
    assert verify(files[1:], after=after).error is None


def test_a_restart_right_after_rotation_goes_on_from_the_rotated_file(tmp_path: Path) -> None:
    path = write(tmp_path, 4)
    store = TraceStore(tmp_path / "t.db", path)
    assert store.chain is not None
    store.chain.rotate()
    store.close()
    assert not path.read_bytes()
    write(tmp_path, 2, start=4)
    result = verify([*audit_chain.rotated_files(path), path])
    assert result.error is None and result.records == 6


def tampered(tmp_path: Path, change: Any) -> str | None:
    path = write(tmp_path, 6)
    lines = lines_of(path)
    path.write_bytes(b"".join(change(lines)))
    return verify([path]).error


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda ls: [*ls[:2], ls[2].replace(b'"/f2"', b'"/etc"'), *ls[3:]],
            "3: edited: its content does not match its hash",
        ),
        (
            lambda ls: [*ls[:3], *ls[4:]],
            (
                "4: does not follow line 3: a record between them was deleted, or line 3 was "
                "edited and its hash recomputed"
            ),
        ),
        (
            lambda ls: ls[1:],
            "1: does not start the chain (prev_hash",
        ),
        (
            lambda ls: [*ls[:2], b'{"trace_id":"forged"}\n', *ls[2:]],
            "3: inserted: not in the chain (line 4 follows line 2)",
        ),
        (lambda ls: [*ls[:2], ls[4], *ls[2:]], "3: inserted: a copy of line 6"),
        (lambda ls: [*ls[:2], ls[0], *ls[2:]], "3: inserted: not in the chain"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "2: reordered: it follows line 3, not line 1"),
        (lambda ls: [*ls[:4], ls[5], ls[4]], "5: reordered: it follows line 6, not line 4"),
        (lambda ls: [*ls[:5], ls[5][:40]], "6: cut short (no end of line): the file was truncated"),
        (
            lambda ls: [*ls[:3], ls[3][:-80] + b"\n", *ls[4:]],
            "4: not a whole record (cut short by a crash or truncation, or edited)",
        ),
        (
            lambda ls: [*ls[:3], json.dumps({**json.loads(ls[3]), "hash": None}).encode() + b"\n"],
            "4: edited: its hash was removed",
        ),
    ],
    ids=[
        "edited",
        "deleted",
        "first-deleted",
        "inserted",
        "inserted-copy",
        "inserted-old-copy",
        "swapped",
        "last-swapped",
        "truncated-mid-line",
        "cut-inside",
        "hash-removed",
    ],
)
def test_tampering_is_named_at_its_line(tmp_path: Path, change: Any, expected: str) -> None:
    error = tampered(tmp_path, change)
    assert error is not None and error.startswith(f"{tmp_path / 't.jsonl'}:{expected}"), error


def test_a_whole_line_truncation_keeps_a_valid_chain(tmp_path: Path) -> None:
    """What the chain alone cannot see (signed checkpoints can, tests/agent_mesh/test_audit_cli)."""
    assert tampered(tmp_path, lambda ls: ls[:4]) is None


def test_lines_from_before_the_chain_are_counted_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"trace_id": "old1"}\n{"trace_id": "old2"}\n')
    write(tmp_path, 2)
    result = verify([path])
    assert result.error is None and (result.unchained, result.records) == (2, 2)


def test_a_line_cut_by_a_crash_is_kept_and_named_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path, 3)
    path.write_bytes(path.read_bytes()[:-30])  # the last write cut short
    write(tmp_path, 1, start=9)
    lines = lines_of(path)
    assert len(lines) == 4 and json.loads(lines[3])["prev_hash"] == json.loads(lines[1])["hash"]
    assert verify([path]).error == (
        f"{path}:3: not a whole record (cut short by a crash or truncation, or edited)"
    )


def test_audit_events_are_chained_once_each(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", tmp_path / "t.jsonl")
    store.record([rec(1)])
    event = AuditEvent(
        id="e1",
        action="grant.created",
        actor="ops",
        subject="g1",
        detail={"agent": "a", "tools": ["fs.*"]},
        timestamp="2026-01-01T00:00:00Z",
    )
    (stored,) = store.audit([event])
    assert store.audit([event]) == []  # a replay
    store.record([rec(2)])
    store.close()
    records = [json.loads(line) for line in lines_of(tmp_path / "t.jsonl")]
    assert [r.get("kind") for r in records] == [None, "audit", None]
    assert records[1] == stored and records[1]["prev_hash"] == records[0]["hash"]
    assert verify([tmp_path / "t.jsonl"]).error is None


def test_one_writer_per_trace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_chain, "LOCK_WAIT", 0.2)
    store = TraceStore(tmp_path / "t.db", tmp_path / "t.jsonl")
    with pytest.raises(RuntimeError, match="another trace writer holds it"):
        TraceStore(tmp_path / "u.db", tmp_path / "t.jsonl")
    store.close()
    TraceStore(tmp_path / "u.db", tmp_path / "t.jsonl").close()  # free once the first closed


def test_verify_names_a_missing_file_in_one_line(tmp_path: Path) -> None:
    error = verify([tmp_path / "nope.jsonl"]).error
    assert error == f"{tmp_path / 'nope.jsonl'}: No such file or directory"
