"""The kill switch on the real bus: the approval service stores freezes and announces them, a
policy worker applies them before any rule or grant; pending approvals are denied; freezes
survive a restart of the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus import frames
from bus.approval_messages import (
    ApprovalClaimReplay,
    ApprovalResolve,
    ApprovalSubmit,
    FreezeCreate,
    FreezeList,
    FreezeThaw,
    GrantCreate,
)
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.events import Publisher
from bus.messages import APPROVAL, POLICY
from bus.worker import BusWorker
from mesh_config.model import Config
from policy.model import Policy, Rule
from workers.approval import ApprovalService
from workers.approval_store import StateStore
from workers.policy import PolicyService

ALLOW = Policy(name="open", agent="*", rules=[Rule(tools=["*"], action="allow")])
ASK = Policy(name="ask", agent="*", rules=[Rule(tools=["*"], action="human_approval")])


class Mesh:
    def __init__(self, client: BusClient, approvals: ApprovalService, policy: PolicyService):
        self.client, self.approvals, self.policy = client, approvals, policy

    async def decide(self, agent: str, tool: str = "fs.read") -> Any:
        body = {"agent": agent, "tool": tool, "params": {}}
        return await self.client.request(POLICY, body, timeout=5, key=agent)

    async def ask(self, body: Any) -> Any:
        return await self.client.request(APPROVAL, body.dump(), timeout=5)

    async def until(self, agent: str, action: str, tool: str = "fs.read") -> Any:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            decision = await self.decide(agent, tool)
            if decision["action"] == action:
                return decision
            await asyncio.sleep(0.005)
        raise AssertionError(f"{agent} {tool}: never {action}")


async def _mesh(
    endpoints: Endpoints, db: Path, policies: list[Policy], announce: bool = True
) -> AsyncIterator[Mesh]:
    publisher = Publisher(endpoints.events_in or "")
    approvals = ApprovalService(StateStore(db), Config(), publisher=publisher if announce else None)
    async with (
        BusClient(endpoints.requests) as worker_client,
        BusClient(endpoints.requests) as client,
    ):
        policy = PolicyService(policies, worker_client)
        workers = [
            BusWorker(endpoints.requests, APPROVAL, approvals.handle, capacity=64),
            BusWorker(endpoints.requests, POLICY, policy.handle, capacity=64),
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers[:1]]
        following = asyncio.create_task(policy.follow_freezes(endpoints.events_out))
        await asyncio.wait_for(policy.load_freezes(), 10)  # before serving, as run() does
        tasks.append(asyncio.create_task(workers[1].run()))
        mesh = Mesh(client, approvals, policy)
        try:
            await _serving(mesh)
            yield mesh
        finally:
            for w in workers:
                w.stop()
            following.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, following, return_exceptions=True)
            publisher.close()


async def _serving(mesh: Mesh) -> None:
    """Until the broker routes to the new policy worker (the last registered)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            await mesh.decide("-")
            return
        except BusError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


@pytest.fixture
async def mesh(broker: Broker, endpoints: Endpoints, tmp_path: Path) -> AsyncIterator[Mesh]:
    async for m in _mesh(endpoints, tmp_path / "state.db", [ALLOW]):
        yield m


async def test_a_freeze_stops_the_agent_before_an_allow_rule_and_thaw_lifts_it(
    mesh: Mesh,
) -> None:
    assert (await mesh.decide("claude"))["action"] == "allow"
    freeze = await mesh.ask(FreezeCreate(agent="claude", reason="leaking", created_by="ops"))
    assert (freeze["kind"], freeze["target"], freeze["denied_approvals"]) == ("agent", "claude", 0)
    refused = await mesh.until("claude", "deny")
    assert refused["rule"] == f"freeze:{freeze['id']}"
    assert refused["reason"] == (
        f"frozen by the kill switch (agent claude, freeze {freeze['id'][:8]}); reason: leaking"
    )
    assert (await mesh.decide("gemini"))["action"] == "allow"  # others still served
    listed = await mesh.ask(FreezeList())
    assert [f["id"] for f in listed["freezes"]] == [freeze["id"]] and listed["revision"] == 1
    thawed = await mesh.ask(FreezeThaw(id=freeze["id"][:6], thawed_by="ops"))
    assert thawed["thawed_by"] == "ops" and thawed["thawed_at"] is not None
    await mesh.until("claude", "allow")
    assert (await mesh.ask(FreezeList())) == {"revision": 2, "freezes": []}
    with pytest.raises(BusError) as err:  # a second thaw
        await mesh.ask(FreezeThaw(id=freeze["id"]))
    assert err.value.code == frames.NOT_FOUND
    assert err.value.message == f"freeze {freeze['id'][:8]} is already thawed"


async def test_tool_and_all_freezes(mesh: Mesh) -> None:
    tool = await mesh.ask(FreezeCreate(tool="fs.write*"))
    await mesh.until("a", "deny", "fs.write_file")
    assert (await mesh.decide("a", "fs.read_file"))["action"] == "allow"
    everything = await mesh.ask(FreezeCreate(all=True, reason="incident"))
    assert everything["target"] == "*"
    refused = await mesh.until("b", "deny", "gh.list")
    assert refused["rule"] == f"freeze:{everything['id']}"
    # The oldest freeze that stops a call names it.
    assert (await mesh.decide("a", "fs.write_file"))["rule"] == f"freeze:{tool['id']}"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"agent": "a", "tool": "t"},
        {"agent": "a", "all": True},
        {"agent": "  "},
    ],
)
async def test_a_freeze_names_exactly_one_target(mesh: Mesh, body: dict[str, Any]) -> None:
    with pytest.raises(BusError) as err:
        await mesh.ask(FreezeCreate.model_validate(body))
    assert err.value.code == frames.BAD_REQUEST
    assert "exactly one of: agent (id or glob), tool (glob), all" in err.value.message


async def test_a_freeze_comes_before_grants_and_denies_pending_approvals(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    async for mesh in _mesh(endpoints, tmp_path / "state.db", [ASK]):
        await mesh.ask(GrantCreate(agent="bot", tools=["fs.*"], duration="1h"))
        granted = await mesh.ask(ApprovalSubmit(agent="bot", tool="fs.read"))
        assert granted["status"] == "approved"  # the grant, before the freeze
        pending = await mesh.ask(ApprovalSubmit(agent="claude", tool="fs.read"))
        other = await mesh.ask(ApprovalSubmit(agent="gemini", tool="fs.read"))
        approved = await mesh.ask(ApprovalSubmit(agent="claude", tool="fs.write"))
        await mesh.ask(ApprovalResolve(id=approved["id"], decision="approve"))
        claude = await mesh.ask(FreezeCreate(agent="claude", reason="runaway"))
        assert claude["denied_approvals"] == 1
        denied = mesh.approvals.store.get(pending["id"])
        assert denied["status"] == "denied"
        assert denied["resolved_by"] == f"freeze:{claude['id']}"
        assert denied["reasoning"].endswith("reason: runaway")
        assert mesh.approvals.store.get(other["id"])["status"] == "pending"
        # Approved before the freeze, not yet run: not run while the freeze holds.
        with pytest.raises(BusError) as err:
            await mesh.ask(ApprovalClaimReplay(id=approved["id"]))
        assert err.value.code == frames.FORBIDDEN and "runaway" in err.value.message
        # Decided `human_approval` just before the freeze reached the policy worker: the
        # approval service refuses it at once, grant or not.
        bot = await mesh.ask(FreezeCreate(agent="bot"))
        late = await mesh.ask(ApprovalSubmit(agent="bot", tool="fs.read"))
        assert late["status"] == "denied"
        assert late["approval"]["resolved_by"] == f"freeze:{bot['id']}"
        refused = await mesh.until("bot", "deny")  # the policy worker: before the grant
        assert refused["rule"] == f"freeze:{bot['id']}"
        # Freezing does not teach decision memory anything.
        assert mesh.approvals.store.memory_count("claude", "fs.read", denied["shape"]) == 0


async def test_freezes_survive_a_restart_and_load_before_serving(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    async for mesh in _mesh(endpoints, db, [ALLOW]):
        freeze = await mesh.ask(FreezeCreate(agent="claude", reason="r"))
        await mesh.until("claude", "deny")
    async for mesh in _mesh(endpoints, db, [ALLOW]):
        # The new policy worker loaded the freeze before its first decision.
        assert mesh.policy.freezes and mesh.policy.freezes[0].id == freeze["id"]
        assert (await mesh.decide("claude"))["rule"] == f"freeze:{freeze['id']}"


def test_an_older_set_does_not_replace_a_newer_one() -> None:
    service = PolicyService([ALLOW])
    one = {"id": "1" * 32, "kind": "all", "target": "*"}
    service.freeze_set({"revision": 3, "freezes": [one]})
    service.freeze_set({"revision": 2, "freezes": []})  # a fetch answered before the event
    assert [f.id for f in service.freezes] == [one["id"]]
    service.freeze_set({"revision": 4, "freezes": "nonsense"})  # malformed: ignored
    assert service.freeze_revision == 3
    service.freeze_set({"revision": 4, "freezes": []})
    assert service.freezes == []


async def test_a_lost_event_is_made_up_for_by_the_resync(
    broker: Broker, endpoints: Endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.policy

    monkeypatch.setattr(workers.policy, "FREEZE_RESYNC", 0.05)
    async for mesh in _mesh(endpoints, tmp_path / "state.db", [ALLOW], announce=False):
        freeze = await mesh.ask(FreezeCreate(tool="fs.*"))  # no event: as if it were lost
        refused = await mesh.until("a", "deny")
        assert refused["rule"] == f"freeze:{freeze['id']}"
