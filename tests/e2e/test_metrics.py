"""GET /metrics on a running mesh: exact counts after known calls, scraped with the Prometheus
client's own text parser; the whole tree's numbers in one scrape (docs/observability.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Iterator[Mesh]:
    config = {
        "approval": {"timeout_seconds": 30, "memory_threshold": 0},
        "metrics": {"max_agents": 2},
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "burst",
                "agent": "burst",
                "rate_limit": {"max_per_minute": 2},
                "rules": [{"tools": ["fs.*"], "action": "allow"}],
            },
            {
                "name": "devs",
                "agent": "*",
                "rules": [
                    {"tools": ["fs.list_*", "fs.read_*"], "action": "allow"},
                    {"tools": ["fs.write_file"], "action": "human_approval"},
                    {"tools": ["*"], "action": "deny"},
                ],
            },
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


def scrape(mesh: Mesh) -> Samples:
    r = mesh.http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_exact_counts_after_known_calls(mesh: Mesh, demo: Path) -> None:
    listing = {"path": str(demo)}
    for _ in range(3):
        assert mesh.call("fs.list_directory", listing, agent="reader").status_code == 200
    assert (
        mesh.call("fs.move_file", {"source": "a", "destination": "b"}, agent="reader").status_code
        == 403
    )
    statuses = [
        mesh.call("fs.list_directory", listing, agent="burst").status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]

    # A call waiting for approval: the pending gauge sees it; approved, it is counted once.
    answer: dict[str, Any] = {}
    waiting = threading.Thread(
        target=lambda: answer.update(
            r=mesh.call(
                "fs.write_file", {"path": str(demo / "w.txt"), "content": "x"}, agent="writer"
            )
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
    assert value(scrape(mesh), "agent_mesh_approvals_pending") == 1
    assert (
        mesh.http.post(
            f"/approvals/{pending[0]['id']}/approve", json={"resolved_by": "ops"}
        ).status_code
        == 200
    )
    waiting.join(30)
    assert answer["r"].status_code == 200

    got = scrape(mesh)
    calls = {k: v for k, v in got.items() if k[0] == "agent_mesh_calls_total"}
    assert calls == {
        (
            "agent_mesh_calls_total",
            frozenset(
                {
                    "tool": "fs.list_directory",
                    "agent": "reader",
                    "decision": "allow",
                    "status": "200",
                }.items()
            ),
        ): 3,
        (
            "agent_mesh_calls_total",
            frozenset(
                {
                    "tool": "fs.move_file",
                    "agent": "reader",
                    "decision": "deny",
                    "status": "403",
                }.items()
            ),
        ): 1,
        (
            "agent_mesh_calls_total",
            frozenset(
                {
                    "tool": "fs.list_directory",
                    "agent": "burst",
                    "decision": "allow",
                    "status": "200",
                }.items()
            ),
        ): 2,
        (
            "agent_mesh_calls_total",
            frozenset(
                {
                    "tool": "fs.list_directory",
                    "agent": "burst",
                    "decision": "rate_limited",
                    "status": "429",
                }.items()
            ),
        ): 1,
        # max_agents: 2 — the third agent is `other`
        (
            "agent_mesh_calls_total",
            frozenset(
                {
                    "tool": "fs.write_file",
                    "agent": "other",
                    "decision": "human_approval",
                    "status": "200",
                }.items()
            ),
        ): 1,
    }
    assert value(got, "agent_mesh_rate_limited_total", agent="burst", reason="rate_limit") == 1
    assert (
        value(
            got,
            "agent_mesh_call_duration_seconds_count",
            tool="fs.list_directory",
            decision="allow",
        )
        == 5
    )
    # Only the calls that reached the upstream: 5 listings and the approved write.
    upstream = sum(
        v for k, v in got.items() if k[0] == "agent_mesh_upstream_duration_seconds_count"
    )
    assert upstream == 6
    assert value(got, "agent_mesh_approval_wait_seconds_count", status="approved") == 1
    assert value(got, "agent_mesh_approvals_pending") == 0
    # The rest of the tree, as the gateway sees it at scrape time.
    assert value(got, "agent_mesh_upstream_workers", server="fs", state="serving") >= 1
    assert value(got, "agent_mesh_upstream_workers", server="fs", state="up") >= 1
    assert value(got, "agent_mesh_upstream_workers", server="fs", state="backing_off") == 0
    assert value(got, "agent_mesh_bus_workers", service="policy") == 1
    assert value(got, "agent_mesh_bus_workers", service="traces") == 1
    assert ("agent_mesh_bus_inflight", frozenset({"service": "upstream.fs"}.items())) in got
    assert value(got, "agent_mesh_trace_outbox_depth") == 0
    assert value(got, "agent_mesh_metrics_source_up", source="traces") == 1
    assert value(got, "agent_mesh_bus_up") == 1
    # Never a label made from params.
    assert not any(str(demo) in "".join(v for _, v in labels) for _, labels in got)


def test_upstream_restart_is_counted(mesh: Mesh, demo: Path) -> None:
    import os
    import signal

    before = value(scrape(mesh), "agent_mesh_upstream_restarts_total", server="fs")
    (pid,) = sorted(mesh.serving("fs"))[:1]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: value(scrape(mesh), "agent_mesh_upstream_restarts_total", server="fs") > before,
        15,
        "the restart counted",
    )
    wait_until(
        lambda: (
            mesh.call("fs.list_directory", {"path": str(demo)}, agent="reader").status_code == 200
        ),
        15,
        "fs serving again",
    )
