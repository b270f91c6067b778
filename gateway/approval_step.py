"""The approval step of a governed call whose policy says `human_approval` (compat.md §7): ask
the approval service; a grant makes it an allowed call, decision memory an approved one; else
the approval is pending: wait for a human's (or the supervisor's) resolution, or, for an MCP
client that does not block, answer 202 with the approval's id at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bus import frames
from bus.approval_messages import ApprovalSubmit, ApprovalWait
from bus.client import BusClient
from bus.errors import BusError, unavailable_service
from bus.messages import APPROVAL
from gateway.call import Call, Outcome

SUBMIT_TIMEOUT = 5.0  # s for the approval service to take the approval


class ApprovalStep:
    def __init__(
        self,
        client: BusClient,
        timeout: float,
        provisional: Callable[[Call, Outcome, str], None],
    ) -> None:
        self.client = client
        self.timeout = timeout  # approval.timeout_seconds: how long an approval may wait
        self.provisional = provisional  # trace the call while it waits

    async def __call__(
        self, call: Call, outcome: Outcome, wait: bool, human_only: bool = False
    ) -> Outcome | None:
        """None: approved (or granted), go on and call the upstream; else the outcome to answer
        (denied, timed out, pending, or the approval service failed). Its time is the span's
        `approval` step. `human_only`: no grant nor decision memory (a changed pinned tool)."""
        asked = time.time_ns()
        try:
            return await self._approval(call, outcome, wait, human_only)
        finally:
            call.span["approval"] = [asked, time.time_ns()]

    async def _approval(
        self, call: Call, outcome: Outcome, wait: bool, human_only: bool
    ) -> Outcome | None:
        try:
            submit = ApprovalSubmit(
                agent=call.agent,
                tool=call.tool,
                params=call.params,
                session_id=call.session_id,
                trace_id=call.trace_id,
                rule=outcome.rule,
                callback_url=call.callback_url,
                human_only=human_only,
            )
            submitted = await self.client.request(APPROVAL, submit.dump(), timeout=SUBMIT_TIMEOUT)
        except BusError as exc:
            outcome.status, outcome.policy = 503, "error"
            outcome.error = unavailable_service("approval service", exc)
            return outcome
        if submitted.get("grant_id"):  # a grant turns approval into allow
            outcome.policy, outcome.rule = "allow", f"grant:{submitted['grant_id']}"
            return None
        approval = submitted["approval"]
        if submitted["status"] == "pending":
            if not wait:
                outcome.status, outcome.approval_id, outcome.approval_status = (
                    202,
                    approval["id"],
                    "pending",
                )
                outcome.error = (
                    f"approval required: approval {approval['id'][:8]} is pending until a human "
                    f"resolves it (`mesh approve {approval['id'][:8]}`)"
                )
                return outcome
            self.provisional(call, outcome, approval["id"])
            approval = await self._wait(approval)
        outcome.approved(approval)
        if approval["status"] == "approved":
            return None
        # Go's statuses: denied 403, no decision in time 408 (Request Timeout).
        outcome.status = {"denied": 403, "timeout": 408}.get(approval["status"], 503)
        what = {"denied": f"denied by {approval['resolved_by']}", "timeout": "timed out"}
        outcome.error = (
            f"approval {approval['id'][:8]} {what.get(approval['status'], approval['status'])}"
            + (f": {approval['reasoning']}" if approval.get("reasoning") else "")
        )
        return outcome

    async def _wait(self, approval: dict[str, Any]) -> dict[str, Any]:
        """Park until resolved. The approval is durable: if the approval worker restarts while we
        wait, ask again until the approval's own deadline (plus slack) has passed."""
        deadline = time.monotonic() + self.timeout + 10.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                result: dict[str, Any] = await self.client.request(
                    APPROVAL, ApprovalWait(id=approval["id"]).dump(), timeout=remaining
                )
                return result
            except BusError as exc:
                if exc.code not in (frames.WORKER_DIED, frames.UNAVAILABLE):
                    break
                await asyncio.sleep(0.2)
        return {
            **approval,
            "status": "unavailable",
            "resolved_by": None,
            "reasoning": "approval service unavailable while waiting",
        }
