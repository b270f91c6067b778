"""Rate limits stay exact when the policy service runs as 4 worker processes: the broker routes
each agent to one policy worker (affinity), so no window is split across processes. Loop
detection applies only to policies that declare `rate_limit` (as in the Go project)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server

PER_MINUTE = 25
CALLS = 40
AGENTS = [f"bot-{i}" for i in range(8)]


EXAMPLE = Path(__file__).parents[2] / "examples" / "filesystem.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Iterator[Mesh]:
    config = {
        "policy_workers": 4,
        "mcp_servers": [
            {"name": "filesystem", "command": npm_server("filesystem"), "args": [str(demo)]}
        ],
        "policies": [
            # the shipped example's policies (claude, default): no rate_limit, so no loop detection
            *yaml.safe_load(EXAMPLE.read_text())["policies"],
            {
                "name": "bots",
                "agent": "bot-*",
                "rate_limit": {"max_per_minute": PER_MINUTE},
                "rules": [{"tools": ["*"], "action": "deny"}],
            },
            {
                "name": "capped",
                "agent": "capped",
                "rate_limit": {"max_total": 7},
                "rules": [{"tools": ["*"], "action": "deny"}],
            },
            {
                "name": "loops",
                "agent": "loop-*",
                "rate_limit": {"loop_window": "10s"},
                "rules": [{"tools": ["filesystem.list_*"], "action": "allow"}],
            },
            {
                "name": "strict",
                "agent": "strict",
                "rate_limit": {"loop_threshold": 1, "loop_window": "1m"},
                "rules": [{"tools": ["filesystem.list_*"], "action": "allow"}],
            },
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


async def _burst(mesh: Mesh, agent: str, n: int) -> Counter[int]:
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
        # Distinct params per call: this is about rate limits, not loop detection.
        responses = await asyncio.gather(
            *(
                client.post(
                    "/tool/filesystem.list_directory",
                    json={"params": {"path": "/", "n": i}},
                    headers={"Authorization": f"Bearer agent:{agent}"},
                )
                for i in range(n)
            )
        )
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
    assert sum(1 for n in served.values() if n > 0) >= 2, (
        f"agents should spread over workers: {served}"
    )


async def test_total_limit_is_exact(mesh: Mesh) -> None:
    counts = await _burst(mesh, "capped", 20)
    assert counts == {403: 7, 429: 13}


def test_readme_demo_run_again_and_again_is_never_refused(mesh: Mesh, demo: Path) -> None:
    # The README's "Try it" calls, five times in a row: identical calls, but the example's
    # policies declare no rate_limit, so nothing counts them (Go: no limiter without rate_limit).
    for _ in range(5):
        assert mesh.call("filesystem.list_directory", {"path": str(demo)}).status_code == 200
        move = {"source": f"{demo}/a", "destination": f"{demo}/b"}
        assert mesh.call("filesystem.move_file", move).status_code == 403
        assert (
            mesh.call("filesystem.list_directory", {"path": str(demo)}, agent=None).status_code
            == 403
        )


def test_loop_detection_refuses_the_fourth_identical_call(mesh: Mesh, demo: Path) -> None:
    statuses = [
        mesh.call("filesystem.list_directory", {"path": str(demo)}, agent="loop-1")
        for _ in range(4)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    refused = statuses[-1].json()
    assert refused["policy"] == "rate_limited"
    assert refused["error"] == (
        "loop detected: agent loop-1 called filesystem.list_directory with the same params more "
        "than 3 times within 10s (policy loops: loop_threshold=3, loop_window=10s)"
    )
    # other params, or another agent of the same policy, are other calls
    assert (
        mesh.call(
            "filesystem.list_directory", {"path": str(demo), "n": 1}, agent="loop-1"
        ).status_code
        == 200
    )
    assert (
        mesh.call("filesystem.list_directory", {"path": str(demo)}, agent="loop-2").status_code
        == 200
    )


def test_loop_threshold_and_window_are_per_policy(mesh: Mesh, demo: Path) -> None:
    first = mesh.call("filesystem.list_directory", {"path": str(demo)}, agent="strict")
    again = mesh.call("filesystem.list_directory", {"path": str(demo)}, agent="strict")
    assert (first.status_code, again.status_code) == (200, 429)
    assert "loop_threshold=1, loop_window=60s" in again.json()["error"]
