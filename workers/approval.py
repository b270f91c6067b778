"""Approval/state worker: the one owner of approvals, grants and Level-1 decision memory
(SQLite via workers/approval_store.py). Serves the `approval` bus service: one typed message
per operation (bus/messages.py, `ApprovalOp`, whose docstrings are the wire spec), validated here.

Waiting never blocks the loop: a `wait` request parks as a future until a human, the supervisor,
memory or the timeout resolves the approval. Callers re-issue `wait` after a restart of this
worker, so a blocked REST caller still gets its answer: the approval itself is durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bus.approval_messages import (
    APPROVAL_OPS,
    ApprovalClaimReplay,
    ApprovalGet,
    ApprovalList,
    ApprovalResolve,
    ApprovalSubmit,
    ApprovalWait,
    FreezeCreate,
    FreezeList,
    FreezeThaw,
    GrantCreate,
    GrantList,
    GrantRevoke,
)
from bus.client import BusClient
from bus.errors import BusError, bad_request, forbidden
from bus.events import Publisher
from bus.messages import APPROVAL
from bus.worker import BusWorker, Request
from mesh_config.model import Config
from policy.approval_view import approval_view, rfc3339
from policy.approvals import injection_risk, param_shape, redact_content
from policy.durations import parse_duration
from policy.globs import glob_matches
from workers.approval_store import StateStore
from workers.audit import AuditOutbox, audit_event
from workers.freeze_service import FreezeOps
from workers.webhooks import Webhooks

log = logging.getLogger(__name__)

TICK = 0.25  # timeout resolution, seconds


class ApprovalService:
    def __init__(
        self,
        store: StateStore,
        config: Config,
        clock: Callable[[], float] = time.time,
        audit: AuditOutbox | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        if audit is not None and audit.db is not store.db:
            raise ValueError("the audit outbox must write on the store's connection (one commit)")
        self.store = store
        self.freezes = FreezeOps(store, clock, audit, publisher)  # the kill switch
        self.audit = audit  # resolutions and grants, chained into the trace file (docs/audit.md)
        self.config = config
        self.clock = clock
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.webhooks = Webhooks()
        self._ops: dict[type, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            ApprovalSubmit: self.op_submit,
            ApprovalWait: self.op_wait,
            ApprovalResolve: self.op_resolve,
            ApprovalClaimReplay: self.op_claim_replay,
            ApprovalList: self.op_list,
            ApprovalGet: self.op_get,
            GrantCreate: self.op_grant_create,
            GrantList: self.op_grant_list,
            GrantRevoke: self.op_grant_revoke,
            FreezeCreate: self.op_freeze_create,
            FreezeList: self.op_freeze_list,
            FreezeThaw: self.op_freeze_thaw,
        }

    async def handle(self, request: Request) -> Any:
        """Validate the body as one of the operations (bus/messages.py, `ApprovalOp`), run it."""
        try:
            op = APPROVAL_OPS.validate_python(request.body)
        except ValidationError as exc:
            raise bad_request(f"approval: invalid request: {_first_error(exc)}") from None
        try:
            return await self._ops[type(op)](op)
        except ValueError as exc:  # a duration that does not parse
            raise bad_request(f"approval: invalid {op.op}: {exc}") from None

    # -- approvals -------------------------------------------------------------------------

    async def op_submit(self, body: ApprovalSubmit) -> dict[str, Any]:
        """A call needs approval: a grant allows it, memory may approve it, else it is pending."""
        agent, tool, params = body.agent, body.tool, body.params
        now = self.clock()
        frozen = self.freezes.stopping(agent, tool)  # decided just before a freeze: still refused
        trusted = frozen is None and not body.human_only  # grants, memory may decide
        for grant in self.store.grants_active(now, agent) if trusted else []:
            if any(glob_matches(pattern, tool) for pattern in grant["tools"]):
                return {
                    "status": "approved",
                    "approved_by": f"grant:{grant['id']}",
                    "grant_id": grant["id"],
                }
        shape = param_shape(params)
        create = functools.partial(
            self.store.create,
            agent=agent,
            tool=tool,
            params=params,
            shape=shape,
            session_id=body.session_id,
            trace_id=body.trace_id,
            policy_rule=body.rule,
            callback_url=body.callback_url or None,
            now=now,
            expires_at=now + self.config.approval.timeout_seconds,
        )
        if frozen is not None:
            why = frozen.decision().reason
            with self.store.transaction():  # the approval and its audit event: one commit
                approval = create(status="denied", resolved_by=f"freeze:{frozen.id}", reasoning=why)
                self._audit_resolution(approval)
            return {"status": "denied", "id": approval["id"], "approval": approval}
        threshold = self.config.approval.memory_threshold
        if trusted and threshold and self.store.memory_count(agent, tool, shape) >= threshold:
            with self.store.transaction():
                approval = create(status="approved", resolved_by="auto:memory")
                self._audit_resolution(approval)
            return {
                "status": "approved",
                "approved_by": "auto:memory",
                "id": approval["id"],
                "approval": approval,
            }
        approval = create()
        if self.config.approval.notify_url:
            self.webhooks.post(
                str(self.config.approval.notify_url), self.notification("pending", approval)
            )
        return {"status": "pending", "id": approval["id"], "approval": approval}

    async def op_wait(self, body: ApprovalWait) -> dict[str, Any]:
        approval = self.store.get(body.id)
        if approval["status"] != "pending":
            return approval
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(approval["id"], []).append(future)
        try:
            return await future
        finally:
            waiting = self.waiters.get(approval["id"], [])
            if future in waiting:
                waiting.remove(future)

    async def op_resolve(self, body: ApprovalResolve) -> dict[str, Any]:
        """`agent`: who resolves, when it is an agent rather than a verified operator (front-ends
        set it from the caller's identity). An agent never approves its own call; denying it
        (withdrawing the request) is allowed."""
        by_agent = body.agent
        if by_agent is not None and body.decision == "approve":
            approval = self.store.get(body.id)
            if approval["agent_id"] == by_agent and approval["status"] == "pending":
                short = approval["id"][:8]
                raise forbidden(
                    f"agent {by_agent} cannot approve its own call (approval {short}); "
                    f"a human approves it: `mesh approve {short}`"
                )
        return self.resolve(
            body.id,
            "approved" if body.decision == "approve" else "denied",
            body.resolved_by or "human",
            body.reasoning,
            body.confidence,
        )

    def resolve(
        self,
        approval_id: str,
        status: str,
        resolved_by: str,
        reasoning: str | None,
        confidence: float | None,
    ) -> dict[str, Any]:
        with self.store.transaction():
            approval = self._store_resolution(
                approval_id, status, resolved_by, reasoning, confidence
            )
        self._tell(approval)
        return approval

    def _store_resolution(
        self,
        approval_id: str,
        status: str,
        resolved_by: str,
        reasoning: str | None,
        confidence: float | None,
    ) -> dict[str, Any]:
        """The resolution, what memory learns from it and its audit event, in the caller's
        transaction."""
        approval = self.store.resolve(
            approval_id, status, resolved_by, reasoning, confidence, self.clock()
        )
        if status in ("approved", "denied") and not resolved_by.startswith(("auto:", "freeze:")):
            self.store.memory_record(
                approval["agent_id"], approval["tool"], approval["shape"], status == "approved"
            )
        self._audit_resolution(approval)
        return approval

    def _tell(self, approval: dict[str, Any]) -> None:
        """A stored resolution to its waiters and its webhook."""
        status = approval["status"]
        for future in self.waiters.pop(approval["id"], []):
            if not future.done():
                future.set_result(approval)
        if approval.get("callback_url"):
            self.webhooks.post(approval["callback_url"], self.notification(status, approval))

    async def op_claim_replay(self, body: ApprovalClaimReplay) -> dict[str, Any]:
        approval = self.store.get(body.id)  # approved before a freeze: not run while it holds
        if (frozen := self.freezes.stopping(approval["agent_id"], approval["tool"])) is not None:
            raise forbidden(frozen.decision().reason)
        return self.store.claim_replay(body.id, self.clock())

    async def op_list(self, body: ApprovalList) -> dict[str, Any]:
        approvals = self.store.list_approvals(body.status, body.agent, body.limit)
        if body.tool:
            approvals = [a for a in approvals if glob_matches(body.tool, a["tool"])]
        return {"approvals": [self.view(a) for a in approvals]}

    async def op_get(self, body: ApprovalGet) -> dict[str, Any]:
        approval = self.store.get(body.id)
        raw = approval if body.raw else self.view(approval)
        return {
            "approval": raw,
            "active_grants": self.store.grants_active(self.clock(), approval["agent_id"]),
        }

    def view(self, approval: dict[str, Any]) -> dict[str, Any]:
        """What supervisors see: content isolated when `expose_content: false`, injection
        flagged."""
        out = {k: v for k, v in approval.items() if k not in ("shape", "callback_url")}
        out["injection_risk"] = injection_risk(approval["params"])
        if not self.config.supervisor.expose_content:
            out["params"] = redact_content(approval["params"])
        return out

    def notification(self, event: str, approval: dict[str, Any]) -> dict[str, Any]:
        """A webhook body: the Go project's (`event` pending | approved | denied | timeout, id,
        agent_id, tool, params, policy_rule, resolved_by, timestamp), the approval item beside."""
        view = approval_view(self.view(approval), self.clock())
        at = (
            approval["resolved_at"]
            if event != "pending" and approval.get("resolved_at")
            else approval["created_at"]
        )
        body = {
            "event": event,
            "id": approval["id"],
            "agent_id": approval["agent_id"],
            "tool": approval["tool"],
            "params": view["params"],
            "policy_rule": approval["policy_rule"],
            "timestamp": rfc3339(at),
        }
        if event != "pending" and approval.get("resolved_by"):
            body["resolved_by"] = approval["resolved_by"]
        return body | {"approval": view}

    # -- grants ----------------------------------------------------------------------------

    async def op_grant_create(self, body: GrantCreate) -> dict[str, Any]:
        if not body.tools or not all(body.tools):
            raise bad_request("tools must be a non-empty list of tool globs")
        seconds = parse_duration(body.duration)
        if seconds <= 0:
            raise bad_request("duration must be positive")
        now = self.clock()
        with self.store.transaction():
            grant = self.store.grant_create(
                body.agent, body.tools, now, now + seconds, body.created_by or "unknown"
            )
            if self.audit is not None:
                detail = {"agent": grant["agent"], "tools": grant["tools"]}
                detail |= {"duration": body.duration, "expires_at": rfc3339(grant["expires_at"])}
                self.audit.add(
                    audit_event("grant.created", grant["created_by"], grant["id"], detail)
                )
        return grant

    async def op_grant_list(self, body: GrantList) -> dict[str, Any]:
        return {"grants": self.store.grants_active(self.clock(), body.agent)}

    async def op_grant_revoke(self, body: GrantRevoke) -> dict[str, Any]:
        with self.store.transaction():
            grant = self.store.grant_revoke(body.id, self.clock())
            if self.audit is not None:
                detail = {"agent": grant["agent"], "tools": grant["tools"]}
                actor = body.revoked_by or "unknown"
                self.audit.add(audit_event("grant.revoked", actor, grant["id"], detail))
        return grant

    # -- freezes (workers/freeze_service.py) ----------------------------------------------

    async def op_freeze_create(self, body: FreezeCreate) -> dict[str, Any]:
        denied: list[dict[str, Any]] = []

        def deny(approval_id: str, by: str, why: str) -> bool:  # in the freeze's transaction
            try:
                denied.append(self._store_resolution(approval_id, "denied", by, why, None))
            except BusError:
                return False  # resolved meanwhile
            return True

        record = self.freezes.create(body, deny)
        for approval in denied:  # once stored
            self._tell(approval)
        return record

    async def op_freeze_list(self, body: FreezeList) -> dict[str, Any]:
        return self.freezes.current().dump()

    async def op_freeze_thaw(self, body: FreezeThaw) -> dict[str, Any]:
        return self.freezes.thaw(body)

    def _audit_resolution(self, approval: dict[str, Any]) -> None:
        if self.audit is None:
            return
        detail = {
            k: approval[k]
            for k in ("status", "agent_id", "tool", "trace_id", "reasoning", "confidence")
            if approval.get(k) is not None
        }
        actor = approval.get("resolved_by") or "unknown"
        self.audit.add(audit_event("approval.resolved", actor, approval["id"], detail))

    # -- timeouts -------------------------------------------------------------

    async def expire_forever(self) -> None:
        while True:
            for approval_id in self.store.due(self.clock()):
                try:
                    self.resolve(approval_id, "timeout", "system:timeout", None, None)
                except BusError:
                    pass  # resolved meanwhile
            await asyncio.sleep(TICK)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"][1:])  # [0] is the operation's tag
    return f"{where}: {error['msg']}" if where else error["msg"]


async def run(endpoint: str, db_path: Path, config: Config, events_in: str | None = None) -> None:
    client = BusClient(endpoint)  # audit events to the trace writer
    await client.start()
    store = StateStore(db_path)
    audit = AuditOutbox(client, store.db)  # its table in the approvals' database
    audit.start()
    publisher = Publisher(events_in) if events_in is not None else None  # freeze.set.changed
    service = ApprovalService(store, config, audit=audit, publisher=publisher)
    expiring = asyncio.create_task(service.expire_forever())
    try:
        # Parked waits hold a request slot each: capacity is about memory, not CPU.
        await BusWorker(endpoint, APPROVAL, service.handle, capacity=100_000, slot="approval").run()
    finally:
        expiring.cancel()
        if publisher is not None:
            publisher.close()
        await audit.stop()
        await client.close()
