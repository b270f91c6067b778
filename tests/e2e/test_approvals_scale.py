"""Approvals at scale and across restarts: 500 callers parked at once while other calls keep
flowing, and a whole-mesh restart that keeps pending approvals and grants."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.mesh import Mesh
from tests.support import npm_server, wait_until

WAITING = 500


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    config = {
        "approval": {"timeout_seconds": 120, "memory_threshold": 0},
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "p",
                "agent": "*",
                "rules": [
                    {"tools": ["fs.list_allowed_directories"], "action": "allow"},
                    {"tools": ["fs.*"], "action": "human_approval"},
                ],
            }
        ],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config).start()
    m.demo = demo  # type: ignore[attr-defined]
    yield m
    m.stop()


async def _latencies(client: httpx.AsyncClient, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        r = await client.post(
            "/tool/fs.list_allowed_directories",
            json={"params": {"tag": tag, "i": i}},
            headers={"Authorization": "Bearer agent:probe"},
        )
        assert r.status_code == 200, r.text
        out.append(time.perf_counter() - started)
    return out


async def test_500_parked_calls_resolved_by_another_client(mesh: Mesh) -> None:
    limits = httpx.Limits(max_connections=WAITING + 50, max_keepalive_connections=WAITING + 50)
    async with httpx.AsyncClient(base_url=mesh.url, timeout=120, limits=limits) as client:
        baseline = statistics.median(await _latencies(client, 30, "before"))
        demo = mesh.demo  # type: ignore[attr-defined]
        calls = [
            asyncio.create_task(
                client.post(
                    "/tool/fs.get_file_info",
                    json={"params": {"path": str(demo), "n": i}},
                    headers={"Authorization": f"Bearer agent:agent-{i}"},
                )
            )
            for i in range(WAITING)
        ]

        async def all_pending() -> list[dict[str, object]]:
            r = await client.get("/approvals", params={"status": "pending", "limit": 1000})
            found: list[dict[str, object]] = r.json()
            return found

        for _ in range(300):
            pending = await all_pending()
            if len(pending) == WAITING:
                break
            await asyncio.sleep(0.1)
        assert len(pending) == WAITING
        # Nothing is blocked while 500 calls are parked: other calls flow at normal latency.
        during = statistics.median(await _latencies(client, 30, "during"))
        assert during < max(5 * baseline, 0.05), (baseline, during)
        assert not any(c.done() for c in calls)

        # Resolve from another client: even agents approved, odd ones denied.
        async with httpx.AsyncClient(base_url=mesh.url, timeout=60, limits=limits) as resolver:

            async def decide(approval: dict[str, object]) -> None:
                n = int(str(approval["agent_id"]).removeprefix("agent-"))
                decision = "approve" if n % 2 == 0 else "deny"
                r = await resolver.post(
                    f"/approvals/{approval['id']}/{decision}", json={"resolved_by": "bulk"}
                )
                assert r.status_code == 200, r.text

            await asyncio.gather(*(decide(a) for a in pending))
        responses = await asyncio.wait_for(asyncio.gather(*calls), 60)
    for i, r in enumerate(responses):
        if i % 2 == 0:
            assert r.status_code == 200 and r.json()["approval_status"] == "approved", (i, r.text)
            assert "size" in r.json()["result"]["content"][0]["text"].lower()
        else:
            assert r.status_code == 403 and r.json()["approval_status"] == "denied", (i, r.text)


def test_whole_mesh_restart_keeps_pending_approvals_and_grants(mesh: Mesh, tmp_path: Path) -> None:
    grant = mesh.http.post(
        "/grants", json={"agent": "g", "tools": ["fs.*"], "duration": "1h"}
    ).json()
    client = httpx.Client(base_url=mesh.url, timeout=30)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    waiting = pool.submit(
        lambda: client.post(
            "/tool/fs.read_text_file",
            json={"params": {"path": "/x"}},
            headers={"Authorization": "Bearer agent:survivor"},
        )
    )

    def pending_ids() -> set[str]:
        return {
            a["id"]
            for a in mesh.http.get(
                "/approvals", params={"status": "pending", "agent": "survivor"}
            ).json()
        }

    wait_until(pending_ids, 10, "the approval to be pending")
    before = pending_ids()
    assert mesh.stop() == set()
    # The waiting caller gets an answer, not a hang: its connection closes with the gateway.
    with pytest.raises(httpx.HTTPError):
        waiting.result(timeout=20)
    mesh.http = httpx.Client(base_url=mesh.url, timeout=30)
    mesh.start()
    assert pending_ids() == before
    grants = {g["id"]: g for g in mesh.http.get("/grants").json()}
    assert grants[grant["id"]]["expires_at"] == grant["expires_at"]
    r = mesh.call("fs.list_allowed_directories", agent="g")
    assert r.status_code == 200
