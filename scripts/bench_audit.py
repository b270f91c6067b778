"""The audit log's two rates, printed as records/s:

    python scripts/bench_audit.py [--records 200000] [--batch 500]

1. tracer: `TraceStore.record` (workers/tracer.py) as the trace writer runs it — batches of
   `--batch` call records (the outbox's MAX_BATCH) into the SQLite index and the hash-chained
   JSONL file, in a temp directory.
2. verify: `agent-mesh audit verify`'s check (workers/audit_verify.py) of the file just written.
The issue asks verify for >= 100k records/s; the script exits 1 below that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bus.messages import TraceRecord, trace_record
from workers.tracer import TraceStore

VERIFY_FLOOR = 100_000


def records(n: int) -> list[TraceRecord]:
    """Call records shaped like real ones: params, a span, approval fields on some."""
    out = []
    for i in range(n):
        extra: dict[str, Any] = {}
        if i % 10 == 0:
            extra = {"approval_id": f"ap{i}", "approval_status": "approved", "approved_by": "human"}
        out.append(
            TraceRecord(
                **trace_record(
                    trace_id=f"{i:032x}",
                    agent_id=f"agent-{i % 7}",
                    tool="filesystem.read_file",
                    policy="allow",
                    status_code=200,
                    latency_ms=3.5,
                    session_id=f"s{i % 50}",
                    params={"path": f"/data/project/file-{i}.txt", "encoding": "utf-8"},
                    estimated_input_tokens=40,
                    estimated_output_tokens=900,
                    tokens_source="estimate",
                    span={"id": f"{i:016x}", "start": 1_700_000_000_000_000_000 + i, "end": 0},
                    **extra,
                )
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    recs = records(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "traces.jsonl"
        store = TraceStore(Path(tmp) / "traces.db", trace)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(recs), args.batch):
            store.record(recs[i : i + args.batch])
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"tracer: {len(recs) / took:,.0f} records/s ({len(recs)} in {took:.2f} s; "
            f"{len(recs) / cpu:,.0f} records per CPU second)"
        )
        try:
            from workers.audit_verify import verify
        except ImportError:  # before the audit log existed: the tracer's rate only
            return 0
        started, cpu = time.perf_counter(), time.process_time()
        result = verify([trace])
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        rate = result.records / took
        print(
            f"verify: {rate:,.0f} records/s ({result.records} in {took:.2f} s; "
            f"{result.records / cpu:,.0f} records per CPU second)"
        )
        if result.error is not None:
            print(f"verify failed: {result.error}", file=sys.stderr)
            return 1
    return 0 if rate >= VERIFY_FLOOR else 1


if __name__ == "__main__":
    sys.exit(main())
