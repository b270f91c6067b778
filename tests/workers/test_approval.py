"""The approval service: its requests validated as typed messages (bus/messages.py), and the
self-approval rule (`resolve` with the resolving agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bus import frames
from bus.approval_messages import ApprovalResolve, ApprovalSubmit
from bus.errors import BusError
from bus.worker import Request
from mesh_config.model import Config
from workers.approval import ApprovalService
from workers.approval_store import StateStore


@pytest.fixture
def service(tmp_path: Path) -> ApprovalService:
    return ApprovalService(StateStore(tmp_path / "state.db"), Config())


async def _pending(service: ApprovalService, agent: str = "claude") -> str:
    submitted = await service.op_submit(
        ApprovalSubmit(agent=agent, tool="fs.write_file", params={"path": "/a"})
    )
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
async def test_who_may_resolve(
    service: ApprovalService, by: str | None, decision: str, status: str
) -> None:
    approval_id = await _pending(service)
    body: dict[str, Any] = {
        "id": approval_id[:8],
        "decision": decision,
        "resolved_by": by or "human",
    }
    if by is not None:
        body["agent"] = by
    assert (await service.op_resolve(ApprovalResolve.model_validate(body)))["status"] == status


async def test_an_agent_cannot_approve_its_own_call(service: ApprovalService) -> None:
    approval_id = await _pending(service)
    with pytest.raises(BusError) as err:
        await service.op_resolve(
            ApprovalResolve(id=approval_id[:8], decision="approve", agent="claude")
        )
    assert err.value.code == frames.FORBIDDEN
    assert err.value.message == (
        f"agent claude cannot approve its own call (approval {approval_id[:8]}); "
        f"a human approves it: `mesh approve {approval_id[:8]}`"
    )
    assert service.store.get(approval_id)["status"] == "pending"  # nothing changed


class _Request:
    """What the service reads of a bus request: its body."""

    def __init__(self, body: Any) -> None:
        self.body = body


async def _handle(service: ApprovalService, body: Any) -> Any:
    request: Request = _Request(body)  # type: ignore[assignment]
    return await service.handle(request)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"op": "nope"},
            "approval: invalid request: Input tag 'nope' found using 'op' does not match",
        ),
        ("not a map", "approval: invalid request: "),
        (
            {"op": "resolve", "id": "x", "decision": "maybe"},
            "approval: invalid request: decision: Input should be 'approve' or 'deny'",
        ),
        ({"op": "wait"}, "approval: invalid request: id: Field required"),
        (
            {"op": "grant_create", "agent": "a", "tools": [], "duration": "5m"},
            "tools must be a non-empty list of tool globs",
        ),
        (
            {"op": "grant_create", "agent": "a", "tools": "fs.*", "duration": "soon"},
            "approval: invalid grant_create: ",
        ),
    ],
)
async def test_a_malformed_request_is_a_bad_request(
    service: ApprovalService, body: Any, message: str
) -> None:
    with pytest.raises(BusError) as err:
        await _handle(service, body)
    assert err.value.code == frames.BAD_REQUEST and err.value.message.startswith(message), (
        err.value.message
    )


async def test_operations_by_their_messages(service: ApprovalService) -> None:
    submitted = await _handle(service, ApprovalSubmit(agent="claude", tool="fs.write_file").dump())
    assert submitted["status"] == "pending"
    grant = await _handle(
        service, {"op": "grant_create", "agent": "claude", "tools": "fs.*", "duration": "5m"}
    )
    assert grant["tools"] == ["fs.*"]
    granted = await _handle(service, ApprovalSubmit(agent="claude", tool="fs.write_file").dump())
    assert granted == {
        "status": "approved",
        "approved_by": f"grant:{grant['id']}",
        "grant_id": grant["id"],
    }
    listed = await _handle(service, {"op": "list", "status": "pending"})
    assert [a["id"] for a in listed["approvals"]] == [submitted["id"]]
    resolved = await _handle(
        service, {"op": "resolve", "id": submitted["id"][:8], "decision": "deny"}
    )
    assert resolved["status"] == "denied"
    with pytest.raises(BusError) as again:
        await _handle(service, {"op": "resolve", "id": submitted["id"], "decision": "approve"})
    assert again.value.code == frames.CONFLICT
