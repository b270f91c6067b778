"""OpenTelemetry export against a real OTLP/HTTP receiver: a small HTTP server in the test that
decodes the protobuf requests with `opentelemetry-proto`. The spans of an allowed, a denied and
an approved call (parents, timings, attributes), the caller's traceparent as parent (REST
header, MCP `_meta`), `/otel-traces`, and a collector that is down: calls unaffected, one
warning in the trace writer's log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.mesh import Mesh, running
from tests.support import free_port, npm_server, wait_until

SERVER, INTERNAL, CLIENT = 2, 1, 3  # OTLP span kinds
OK, ERROR = 1, 2


class Receiver:
    """An OTLP/HTTP collector: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    receiver.resources.append(resource)
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            receiver.spans.append(
                                {
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "start": s.start_time_unix_nano,
                                    "end": s.end_time_unix_nano,
                                    "status": s.status.code,
                                    "scope": ss.scope.name,
                                    "attrs": {a.key: _value(a.value) for a in s.attributes},
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in list(self.spans) if s["trace_id"] == trace_id]


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def config(demo: Path, otel_endpoint: str) -> dict[str, Any]:
    return {
        "otel_endpoint": otel_endpoint,
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "devs",
                "agent": "*",
                "rules": [
                    {"tools": ["fs.list_*", "fs.read_*"], "action": "allow"},
                    {"tools": ["fs.write_file"], "action": "human_approval"},
                    {"tools": ["*"], "action": "deny"},
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, demo: Path, receiver: Receiver
) -> Iterator[Mesh]:
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config(demo, receiver.url))) as m:
        yield m


def spans_of(receiver: Receiver, trace_id: str, n: int) -> dict[str, dict[str, Any]]:
    wait_until(lambda: len(receiver.trace(trace_id)) >= n, 15, f"{n} spans of trace {trace_id}")
    spans = receiver.trace(trace_id)
    assert len(spans) == n, spans
    return {s["name"]: s for s in spans}


def inside(child: dict[str, Any], parent: dict[str, Any]) -> bool:
    return bool(parent["start"] <= child["start"] <= child["end"] <= parent["end"])


def test_allowed_call_joins_the_callers_trace(mesh: Mesh, receiver: Receiver, demo: Path) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = mesh.call(
        "fs.list_directory",
        {"path": str(demo)},
        agent="dev",
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", "X-Session-Id": "s-1"},
    )
    assert r.status_code == 200 and r.json()["trace_id"] == trace_id
    spans = spans_of(receiver, trace_id, 3)
    call, policy, upstream = (
        spans["tools/call fs.list_directory"],
        spans["policy decision"],
        spans["tools/call list_directory"],
    )
    assert call["parent"] == caller_span and call["kind"] == SERVER and call["status"] == OK
    assert policy["parent"] == call["span_id"] and policy["kind"] == INTERNAL
    assert upstream["parent"] == call["span_id"] and upstream["kind"] == CLIENT
    assert inside(policy, call) and inside(upstream, call) and policy["end"] <= upstream["start"]
    a = call["attrs"]
    assert {
        k: a[k]
        for k in (
            "agent.id",
            "tool.name",
            "policy.action",
            "policy.rule",
            "http.status_code",
            "mcp.method.name",
            "gen_ai.tool.name",
            "gen_ai.operation.name",
            "session.id",
            "mcp.session.id",
        )
    } == {
        "agent.id": "dev",
        "tool.name": "fs.list_directory",
        "policy.action": "allow",
        "policy.rule": "devs",
        "http.status_code": 200,
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "fs.list_directory",
        "gen_ai.operation.name": "execute_tool",
        "session.id": "s-1",
        "mcp.session.id": "s-1",
    }
    # upstream vs total latency, both measured where they happen
    assert 0 < a["agent_mesh.upstream.latency_ms"] <= a["agent_mesh.latency_ms"]
    assert (
        abs(a["agent_mesh.upstream.latency_ms"] - (upstream["end"] - upstream["start"]) / 1e6)
        < 0.01
    )
    assert upstream["attrs"]["gen_ai.tool.name"] == "list_directory"
    assert receiver.paths[0] == "/v1/traces"
    assert receiver.resources[0]["service.name"] == "agent-mesh"
    assert call["scope"] == "agent-mesh"


def test_calls_in_one_agent_trace_are_each_kept(mesh: Mesh, receiver: Receiver, demo: Path) -> None:
    trace_id, caller_span = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
    header = {"traceparent": f"00-{trace_id}-{caller_span}-01"}
    for path in (demo, demo / "a.txt"):
        tool = "fs.list_directory" if path == demo else "fs.read_text_file"
        assert mesh.call(tool, {"path": str(path)}, agent="dev", headers=header).status_code == 200
    calls = [s for s in spans_of(receiver, trace_id, 6).values() if s["kind"] == SERVER]
    assert sorted(s["name"] for s in calls) == [
        "tools/call fs.list_directory",
        "tools/call fs.read_text_file",
    ]
    assert {s["parent"] for s in calls} == {caller_span}
    stored = [
        t
        for t in mesh.http.get("/traces", params={"agent": "dev", "limit": 500}).json()
        if t["trace_id"] == trace_id
    ]
    assert len(stored) == 2  # one trace entry per call, as in Go


def test_denied_call(mesh: Mesh, receiver: Receiver) -> None:
    r = mesh.call("fs.move_file", {"source": "/a", "destination": "/b"}, agent="dev")
    assert r.status_code == 403
    spans = spans_of(receiver, r.json()["trace_id"], 2)  # no upstream span: it never ran
    call, policy = spans["tools/call fs.move_file"], spans["policy decision"]
    assert call["parent"] == "" and call["status"] == ERROR  # a root span: no traceparent given
    assert call["attrs"]["policy.action"] == "deny" and call["attrs"]["http.status_code"] == 403
    assert (
        call["attrs"]["error.type"] == "403"
        and "denied by policy devs" in call["attrs"]["error.message"]
    )
    assert policy["parent"] == call["span_id"] and policy["attrs"]["policy.action"] == "deny"


def test_approved_call_says_who_approved(mesh: Mesh, receiver: Receiver, demo: Path) -> None:
    answer: dict[str, Any] = {}
    waiting = threading.Thread(
        target=lambda: answer.update(
            r=mesh.call("fs.write_file", {"path": str(demo / "w.txt"), "content": "x"}, agent="dev")
        )
    )
    waiting.start()
    pending: list[dict[str, Any]] = []

    def some_pending() -> bool:
        pending.extend(mesh.http.get("/approvals", params={"status": "pending"}).json())
        return bool(pending)

    wait_until(
        some_pending,
        10,
        "the pending approval",
    )
    time.sleep(0.05)  # a measurable wait
    assert (
        mesh.http.post(
            f"/approvals/{pending[0]['id']}/approve", json={"resolved_by": "alice"}
        ).status_code
        == 200
    )
    waiting.join(30)
    r = answer["r"]
    assert r.status_code == 200
    spans = spans_of(receiver, r.json()["trace_id"], 4)
    call, wait, upstream = (
        spans["tools/call fs.write_file"],
        spans["approval wait"],
        spans["tools/call write_file"],
    )
    assert call["attrs"]["approval.id"] == pending[0]["id"]
    assert (
        call["attrs"]["approval.status"] == "approved"
        and call["attrs"]["approval.approved_by"] == "alice"
    )
    assert call["attrs"]["policy.action"] == "human_approval"
    assert wait["parent"] == call["span_id"] and wait["attrs"]["approval.approved_by"] == "alice"
    assert inside(wait, call) and wait["end"] <= upstream["start"] and inside(upstream, call)
    assert wait["end"] - wait["start"] >= 50_000_000


async def test_mcp_meta_traceparent_is_the_parent(
    mesh: Mesh, receiver: Receiver, demo: Path
) -> None:
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with mesh.mcp(agent="dev") as client:
        result = await client.call_tool(
            "fs.list_directory",
            {"path": str(demo)},
            meta={"traceparent": f"00-{trace_id}-{caller_span}-01"},  # type: ignore[arg-type]
        )
    assert not result.is_error
    call = spans_of(receiver, trace_id, 3)["tools/call fs.list_directory"]
    assert call["parent"] == caller_span and call["attrs"]["mcp.method.name"] == "tools/call"


async def test_mcp_http_traceparent_header_is_the_parent(
    mesh: Mesh, receiver: Receiver, demo: Path
) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from gateway.mcp_sdk import create_mcp_http_client

    trace_id, caller_span = "1af7651916cd43dd8448eb211c80319d", "c7ad6b7169203332"
    http = create_mcp_http_client(
        headers={
            "Authorization": "Bearer agent:dev",
            "traceparent": f"00-{trace_id}-{caller_span}-01",
        }
    )
    async with (
        http,
        Client(
            streamable_http_client(f"{mesh.url}/mcp", http_client=http), mode="legacy"
        ) as client,
    ):
        result = await client.call_tool("fs.list_directory", {"path": str(demo)})
    assert not result.is_error
    call = spans_of(receiver, trace_id, 3)["tools/call fs.list_directory"]
    assert call["parent"] == caller_span


def test_otel_traces_route_answers_otlp_json(mesh: Mesh, receiver: Receiver) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    wait_until(lambda: receiver.trace(trace_id), 15, "the exported call")
    body = mesh.http.get("/otel-traces", params={"limit": 50}).json()
    (resource,) = body["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "agent-mesh"}} in resource["resource"][
        "attributes"
    ]
    (scope,) = resource["scopeSpans"]
    spans = [s for s in scope["spans"] if s["traceId"] == trace_id]
    exported = {s["span_id"]: s for s in receiver.trace(trace_id)}
    assert {s["spanId"] for s in spans} == set(exported)  # the same spans the collector got
    call = next(s for s in spans if s["name"] == "tools/call fs.list_directory")
    assert call["parentSpanId"] == "00f067aa0ba902b7" and call["kind"] == SERVER
    assert call["startTimeUnixNano"] == str(exported[call["spanId"]]["start"])
    assert {"key": "http.status_code", "value": {"intValue": "200"}} in call["attributes"]
    assert mesh.http.get("/otel-traces", params={"limit": "x"}).status_code == 400


def test_collector_down_never_touches_calls(tmp_path: Path, demo: Path) -> None:
    port = free_port()  # nothing listens there
    m = Mesh(tmp_path, config(demo, f"http://127.0.0.1:{port}")).start()
    try:
        log = m.state / "logs" / "tracer-0.log"

        def dropped() -> float:
            text = m.http.get("/metrics").text
            return sum(
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "agent_mesh_otel_spans_total" and s.labels.get("result") == "dropped"
            )

        for batch in range(2):
            started = time.perf_counter()
            for _ in range(10):
                r = m.call("fs.list_directory", {"path": str(demo)}, agent="dev")
                assert r.status_code == 200
            assert (time.perf_counter() - started) / 10 < 1.0  # never the export timeout (5 s)

            # 10 calls of 3 spans each, dropped by the exporter thread after its failed tries
            def all_dropped(n: int = batch) -> bool:
                return dropped() >= 30 * (n + 1)

            wait_until(all_dropped, 30, "the spans dropped")
        warnings = [line for line in log.read_text().splitlines() if "otel:" in line]
        assert len(warnings) == 1, warnings
        assert f"cannot export spans to http://127.0.0.1:{port}/v1/traces" in warnings[0]
        assert "connect" in warnings[0].lower() or "refused" in warnings[0].lower()
    finally:
        assert m.stop() == set()
