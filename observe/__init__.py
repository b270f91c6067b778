"""Seeing the mesh: Prometheus metrics, OpenTelemetry spans and the web console (/ui).

Nothing here is on the call path except `traceparent` (parsing a header) and `span_ids`; the
rest runs in the trace writer (metrics of calls, span export) or answers the gateway's
observability routes. docs/observability.md says how it fits together.
"""
