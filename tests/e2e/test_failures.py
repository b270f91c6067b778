"""Failure paths with the real tree: an upstream that cannot start, approval not built yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mesh import Mesh
from tests.support import npm_server


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    config = {
        "mcp_servers": [
            {"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]},
            {"name": "broken", "command": str(demo / "no-such-server")},
        ],
        "policies": [{"name": "all", "agent": "*", "rules": [
            {"tools": ["*"], "action": "allow"},
        ]}],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config)
    m.start(ready=lambda health: health["upstreams"].get("fs") == "up")
    yield m
    assert m.stop() == set()


def test_broken_upstream_is_reported_and_isolated(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.call("broken.anything", {"x": 1})
    assert r.status_code == 503
    assert r.json()["error"].startswith("upstream unavailable: broken")
    health = mesh.http.get("/health")  # the gateway answers: 200, degraded
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["upstreams"] == {"fs": "up", "broken": "down"}
    assert mesh.http.get("/ready").status_code == 503
    servers = {s["name"]: s for s in mesh.http.get("/mcp-servers").json()}
    assert servers["broken"]["status"] == "error" and servers["fs"]["status"] == "ready"
    ok = mesh.call("fs.list_allowed_directories")
    assert ok.status_code == 200, ok.text
