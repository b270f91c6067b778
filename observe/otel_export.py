"""OpenTelemetry export of every call, from the trace writer: one exporter for the whole tree
(the trace writer sees every call), batched by the SDK's BatchSpanProcessor in its own thread —
`export()` only queues, so neither the trace writer's loop nor any call waits on a collector.

`otel_endpoint: stdout` prints each span as one JSON line on the trace writer's stdout (its log);
`otel_endpoint: http://host:4318` sends OTLP/HTTP protobuf to `<endpoint>/v1/traces`.

A collector that is down costs the calls nothing: spans are dropped (the SDK's bounded queue)
and the trace writer logs ONE warning naming the endpoint and the error, then one line when
export works again — not a line per batch or per call (the SDK's own per-batch messages are
held back and only their latest is quoted in ours).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from observe.spans import SERVICE, VERSION, SpanData, call_spans

log = logging.getLogger(__name__)

EXPORT_TIMEOUT = (
    3.0  # s per export request, retries included: the exporter thread waits, never a call
)
SCHEDULE_DELAY_MS = 500  # a span reaches the collector within about this
# While the collector fails, calls' spans are dropped before they are even made (cheap), and
# export is tried again this often (then it works again, or it fails and waits again).
RETRY_EVERY = 5.0
# The SDK's loggers that speak per batch: held back, their latest message quoted in our warning.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk._shared_internal",
)
_KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
Counted = Callable[[bool, int], None]


class _HeldBack(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.last = record.getMessage()
        return False


class _OncePerOutage(SpanExporter):
    """Wraps the real exporter: one warning when export starts failing, one line when it works
    again."""

    def __init__(
        self, inner: SpanExporter, where: str, held: _HeldBack, counted: Counted | None
    ) -> None:
        self.inner, self.where, self.held, self.counted = inner, where, held, counted
        self.failing = False
        self.dropped = 0
        self.retry_at = (
            0.0  # while failing: monotonic time of the next try; spans before it are not made
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 — an exporter must not take the thread down
            self.held.last = f"{type(exc).__name__}: {exc}"
            result = SpanExportResult.FAILURE
        if self.counted is not None:
            self.counted(result is SpanExportResult.SUCCESS, len(spans))
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                log.warning(
                    "otel: exporting spans to %s works again (%d spans were dropped meanwhile)",
                    self.where,
                    self.dropped,
                )
                self.failing, self.dropped = False, 0
            return result
        self.dropped += len(spans)
        self.retry_at = time.monotonic() + RETRY_EVERY
        if not self.failing:
            self.failing = True
            log.warning(
                "otel: cannot export spans to %s (%s); calls go on, spans are dropped until it "
                "answers (said once)",
                self.where,
                _reach(self.where, self.held.last),
            )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def _reach(url: str, said: str) -> str:
    """Why an export failed: the SDK's last word is vague ("timeout, max retries or shutdown")
    about a collector that cannot be reached at all, so try to reach it once."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=2.0):
            return f"the collector did not accept them: {said or 'export failed'}"
    except (OSError, ValueError) as exc:
        return f"cannot connect: {getattr(exc, 'strerror', None) or exc}"


def _console(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


class SpanExport:
    def __init__(
        self,
        endpoint: str,
        schedule_delay_ms: int = SCHEDULE_DELAY_MS,
        counted: Counted | None = None,
    ) -> None:
        """`counted(exported, n)` hears of each batch (from the exporter thread)."""
        held = _HeldBack()
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(held)
        inner: SpanExporter
        if endpoint == "stdout":
            inner, where = ConsoleSpanExporter(out=sys.stdout, formatter=_console), "stdout"
        else:
            where = endpoint.rstrip("/") + "/v1/traces"
            inner = OTLPSpanExporter(endpoint=where, timeout=EXPORT_TIMEOUT)
        self.exporter = _OncePerOutage(inner, where, held, counted)
        self.processor = BatchSpanProcessor(self.exporter, schedule_delay_millis=schedule_delay_ms)
        self.resource = Resource.create({"service.name": SERVICE, "service.version": VERSION})
        self.scope = InstrumentationScope(SERVICE, VERSION)
        self._lock = threading.Lock()

    def export(self, record: dict[str, Any]) -> None:
        """Queue the spans of one final trace record (a provisional one has none yet). Spans
        whose caller said "not sampled" in its traceparent are not exported."""
        if record.get("approval_status") == "pending":
            return
        exporter = self.exporter
        if exporter.failing and time.monotonic() < exporter.retry_at:
            steps = record.get("span") or {}
            n = 1 + sum(
                step in steps for step in ("policy", "approval", "upstream")
            )  # what call_spans makes
            if exporter.counted is not None:  # not sent: the collector is down
                exporter.counted(False, n)
            exporter.dropped += n
            return
        for span in call_spans(record):
            if span.sampled:
                self.processor.on_end(self._readable(span))

    def _readable(self, span: SpanData) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED)
        context = SpanContext(
            int(span.trace_id, 16), int(span.span_id, 16), is_remote=False, trace_flags=flags
        )
        parent = None
        if span.parent_id:
            parent = SpanContext(
                int(span.trace_id, 16),
                int(span.parent_id, 16),
                is_remote=span.remote_parent,
                trace_flags=flags,
            )
        status = (
            Status(StatusCode.ERROR, span.message or None)
            if span.status == 2
            else Status(StatusCode.OK)
        )
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=span.attributes,
            kind=_KINDS[span.kind],
            status=status,
            start_time=span.start,
            end_time=span.end,
            instrumentation_scope=self.scope,
        )

    def shutdown(self) -> None:
        """Flush what is queued (bounded by the export timeout) and stop the exporter thread."""
        self.processor.shutdown()  # type: ignore[no-untyped-call]
