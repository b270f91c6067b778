"""Rate limits stay exact when the policy service runs as 4 worker processes: the broker routes
each agent to one policy worker (affinity), so no window is split across processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.mesh import Mesh
from tests.support import npm_server

PER_MINUTE = 25
CALLS = 40
AGENTS = [f"bot-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    config = {
        "policy_workers": 4,
        "mcp_servers": [{"name": "filesystem", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {"name": "bots", "agent": "bot-*", "rate_limit": {"max_per_minute": PER_MINUTE},
             "rules": [{"tools": ["*"], "action": "deny"}]},
            {"name": "capped", "agent": "capped", "rate_limit": {"max_total": 7},
             "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }
    m = Mesh(tmp_path_factory.mktemp("mesh"), config).start()
    yield m
    assert m.stop() == set()


async def _burst(mesh: Mesh, agent: str, n: int) -> Counter[int]:
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
        # Distinct params per call: this is about rate limits, not loop detection.
        responses = await asyncio.gather(*(
            client.post("/tool/filesystem.list_directory", json={"params": {"path": "/", "n": i}},
                        headers={"Authorization": f"Bearer agent:{agent}"})
            for i in range(n)
        ))
    for r in responses:
        if r.status_code == 429:
            assert r.json()["policy"] == "rate_limited"
            assert "max_" in r.json()["error"]
    return Counter(r.status_code for r in responses)


async def test_per_minute_limit_is_exact_across_four_policy_workers(mesh: Mesh) -> None:
    assert len(mesh.role_pids("policy")) == 4
    results = await asyncio.gather(*(_burst(mesh, agent, CALLS) for agent in AGENTS))
    for agent, counts in zip(AGENTS, results, strict=True):
        assert counts == {403: PER_MINUTE, 429: CALLS - PER_MINUTE}, (agent, counts)
    served = mesh.http.get("/health").json()["services"]["policy"]["served"]
    assert len(served) == 4
    assert sum(1 for n in served.values() if n > 0) >= 2, f"agents should spread over workers: {served}"


async def test_total_limit_is_exact(mesh: Mesh) -> None:
    counts = await _burst(mesh, "capped", 20)
    assert counts == {403: 7, 429: 13}
