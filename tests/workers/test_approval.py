"""The approval service's self-approval rule (`op_resolve` with the resolving agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_mesh.config import Config
from bus import frames
from bus.errors import BusError
from workers.approval import ApprovalService
from workers.approval_store import StateStore


@pytest.fixture
def service(tmp_path: Path) -> ApprovalService:
    return ApprovalService(StateStore(tmp_path / "state.db"), Config())


async def _pending(service: ApprovalService, agent: str = "claude") -> str:
    submitted = await service.op_submit({"agent": agent, "tool": "fs.write_file", "params": {"path": "/a"}})
    assert submitted["status"] == "pending"
    return str(submitted["id"])


@pytest.mark.parametrize(
    ("by", "decision", "status"),
    [
        (None, "approve", "approved"),  # a human (no agent identity claimed)
        ("supervisor-bot", "approve", "approved"),  # another agent: the front-ends decide that
        ("claude", "deny", "denied"),  # withdrawing its own request
    ],
)
async def test_who_may_resolve(service: ApprovalService, by: str | None, decision: str, status: str) -> None:
    approval_id = await _pending(service)
    body: dict[str, Any] = {"id": approval_id[:8], "decision": decision, "resolved_by": by or "human"}
    if by is not None:
        body["agent"] = by
    assert (await service.op_resolve(body))["status"] == status


async def test_an_agent_cannot_approve_its_own_call(service: ApprovalService) -> None:
    approval_id = await _pending(service)
    with pytest.raises(BusError) as err:
        await service.op_resolve({"id": approval_id[:8], "decision": "approve", "agent": "claude"})
    assert err.value.code == frames.FORBIDDEN
    assert err.value.message == (f"agent claude cannot approve its own call (approval {approval_id[:8]}); "
                                 f"a human approves it: `mesh approve {approval_id[:8]}`")
    assert service.store.get(approval_id)["status"] == "pending"  # nothing changed
