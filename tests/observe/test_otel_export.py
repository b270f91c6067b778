"""The span exporter when its collector comes and goes (observe/otel_export.py): one warning
when export starts failing, spans then dropped before they are made, one line when it is back."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bus.messages import trace_record
from observe import otel_export
from observe.otel_export import SpanExport
from tests.support import free_port, wait_until


class Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def record() -> dict[str, Any]:
    t = time.time_ns()
    return trace_record(
        trace_id="ab" * 16,
        agent_id="a",
        tool="fs.read",
        policy="allow",
        status_code=200,
        latency_ms=1,
        span={"id": "cd" * 8, "start": t, "end": t + 1000, "upstream": [t, t + 10]},
    )


def test_collector_down_then_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(otel_export, "RETRY_EVERY", 0.3)
    port = free_port()
    counts = {True: 0, False: 0}
    exporter = SpanExport(
        f"http://127.0.0.1:{port}",
        schedule_delay_ms=50,
        counted=lambda ok, n: counts.__setitem__(ok, counts[ok] + n),
    )
    caplog.set_level(logging.WARNING, logger=otel_export.__name__)
    try:
        exporter.export(record())
        wait_until(lambda: exporter.exporter.failing, 10, "export failing")
        for _ in range(100):  # while it fails: dropped at once, 2 spans each, nothing queued
            exporter.export(record())
        assert counts[False] >= 200
        server = ThreadingHTTPServer(("127.0.0.1", port), Ok)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:

            def exported() -> bool:
                exporter.export(record())
                return not exporter.exporter.failing

            wait_until(exported, 10, "export back")
            exporter.shutdown()  # flushed while the collector is still there
        finally:
            server.shutdown()
            server.server_close()
    finally:
        exporter.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == otel_export.__name__]
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        f"otel: cannot export spans to http://127.0.0.1:{port}/v1/traces (cannot connect"
    )
    assert lines[1].startswith(
        f"otel: exporting spans to http://127.0.0.1:{port}/v1/traces works again"
    )
    assert counts[True] >= 2
