"""`GET /metrics`: Prometheus text format, one scrape for the whole tree.

The counters and histograms of calls come from the trace writer, which sees every call of every
front-end (observe/call_metrics.py); this module adds what the gateway sees at scrape time: the
bus (the broker's `mmi.services`: live workers, in-flight and queued requests per service),
upstream worker states and restarts, pending approvals, the trace outbox. Why not the client
library's multiprocess mode: docs/observability.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.approval_messages import ApprovalList
from bus.errors import BusError
from bus.messages import APPROVAL, TRACES, UPSTREAM_PREFIX, UpstreamStateName
from gateway import last_resort

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    from gateway.frontend import FrontEnd
    from gateway.peers import Peers

log = logging.getLogger(__name__)


class UpstreamRestarts:
    """Restarts of upstreams as this gateway saw them: a worker slot that comes back with another
    upstream session (its worker was restarted, started a new MCP server, or the warm spare took
    the slot). A slot seen for the first time is not a restart."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], str] = {}  # (server, slot) → upstream session
        self.counts: dict[str, int] = {}

    def seen(self, services: dict[str, Any]) -> None:
        for service, entry in services.items():
            if not service.startswith(UPSTREAM_PREFIX):
                continue
            server = service[len(UPSTREAM_PREFIX) :]
            for worker in entry.get("workers", []):
                key, session = (
                    (server, str(worker.get("slot"))),
                    str((worker.get("meta") or {}).get("session")),
                )
                before = self.sessions.get(key)
                if before is not None and before != session:
                    self.counts[server] = self.counts.get(server, 0) + 1
                self.sessions[key] = session


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class MetricsRoute:
    def __init__(self, gateway: FrontEnd, peers: Peers | None = None) -> None:
        self.gw = gateway
        self.peers = peers  # several gateway processes: which one answered, what it forwarded
        self.restarts = UpstreamRestarts()
        self.enabled = gateway.loaded.config.metrics.enabled
        catalog = gateway.catalog  # every refresh in which some server's upstream sessions changed
        catalog.add_worker_listener(lambda _servers: self.restarts.seen(catalog.services))

    async def handle(self, request: Request) -> Response:
        # prometheus-client is imported at the first scrape: a restarted gateway serves sooner.
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily

        if not self.enabled:
            return JSONResponse(
                {"error": "metrics are off in this mesh's config (metrics: {enabled: false})"},
                status_code=404,
            )
        gw = self.gw
        await gw.outbox.settled(
            2.0
        )  # the calls this gateway answered are counted (read-your-writes)
        await gw.catalog.refresh()
        self.restarts.seen(gw.catalog.services)
        families = self._bus(gw.catalog.services, gw.catalog.bus_ok) + self._upstreams(
            gw.catalog.services
        )
        outbox = gw.outbox
        families.append(
            _gauge(
                "agent_mesh_trace_outbox_depth",
                "Trace records this gateway holds until the trace writer acknowledges them",
                outbox.backlog,
            )
        )
        families.append(
            _counter(
                "agent_mesh_trace_outbox_dropped",
                "Trace records dropped: backlog full",
                outbox.dropped,
            )
        )
        families.append(
            _counter(
                "agent_mesh_http_internal_errors",
                "HTTP requests this gateway answered "
                "with a 500 internal error (gateway/last_resort.py)",
                last_resort.internal_errors(),
            )
        )
        if self.peers is not None:  # a scrape is answered by one of several gateway processes
            process = GaugeMetricFamily(
                "agent_mesh_gateway_process",
                "The gateway process that answered this scrape (gateway.processes > 1)",
                labels=["slot", "pid"],
            )
            process.add_metric([str(self.peers.slot), str(os.getpid())], 1)
            families.append(process)
            families.append(
                _counter(
                    "agent_mesh_mcp_forwarded",
                    "/mcp requests this gateway process passed on to the process holding "
                    "their session",
                    self.peers.forwarded,
                )
            )
        calls_text, sources = "", {}
        try:
            reply = await gw.client.request(TRACES, {"op": "metrics"}, timeout=2.0)
            calls_text, sources["traces"] = str(reply.get("text", "")), 1
        except BusError as exc:
            log.warning(
                "/metrics: the trace writer did not answer (%s): call metrics left out", exc.message
            )
            sources["traces"] = 0
        try:
            pending = await gw.client.request(
                APPROVAL, ApprovalList(status="pending", limit=10_000).dump(), timeout=2.0
            )
            families.append(
                _gauge(
                    "agent_mesh_approvals_pending",
                    "Calls waiting for a human or supervisor",
                    len(pending["approvals"]),
                )
            )
            sources["approval"] = 1
        except BusError:
            sources["approval"] = 0
        up = GaugeMetricFamily(
            "agent_mesh_metrics_source_up",
            "Whether a process answered this scrape",
            labels=["source"],
        )
        for source, value in sources.items():
            up.add_metric([source], value)
        families.append(up)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        text = generate_latest(registry).decode() + calls_text
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def _bus(self, services: dict[str, Any], bus_ok: bool) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        workers = GaugeMetricFamily(
            "agent_mesh_bus_workers", "Live workers of each bus service", labels=["service"]
        )
        inflight = GaugeMetricFamily(
            "agent_mesh_bus_inflight", "Requests being served, per bus service", labels=["service"]
        )
        queued = GaugeMetricFamily(
            "agent_mesh_bus_queued",
            "Requests waiting for a free worker, per bus service",
            labels=["service"],
        )
        for service, entry in sorted(services.items()):
            live = entry.get("workers", [])
            workers.add_metric([service], len(live))
            inflight.add_metric([service], sum(int(w.get("inflight", 0)) for w in live))
            queued.add_metric([service], int(entry.get("queued", 0)))
        return [
            _gauge("agent_mesh_bus_up", "Whether the gateway reaches the broker", int(bus_ok)),
            workers,
            inflight,
            queued,
        ]

    def _upstreams(self, services: dict[str, Any]) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            "agent_mesh_upstream_workers",
            "Upstream worker processes by lifecycle state (starting, up, spare, restarting, "
            "backing_off, failed); serving: those on the bus serving calls",
            labels=["server", "state"],
        )
        failures = GaugeMetricFamily(
            "agent_mesh_upstream_start_failures",
            "Failed starts in a row of a server that is down",
            labels=["server"],
        )
        restarts = CounterMetricFamily(
            "agent_mesh_upstream_restarts",
            "A worker slot back with a new upstream session (worker or server "
            "restarted), since this gateway started",
            labels=["server"],
        )
        for name in self.gw.catalog.configured:
            serving = (services.get(UPSTREAM_PREFIX + name) or {}).get("workers", [])
            view = self.gw.catalog.servers[name]
            state.add_metric([name, "serving"], len(serving))
            for each in UpstreamStateName:
                if each is not UpstreamStateName.STOPPED:
                    count = sum(1 for s in view.states if s.state == each)
                    state.add_metric([name, each.value], count)
            failures.add_metric(
                [name], 0 if view.up else max((s.failures for s in view.states), default=0)
            )
            restarts.add_metric([name], self.restarts.counts.get(name, 0))
        return [state, failures, restarts]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value)
