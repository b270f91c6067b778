"""The kill switch's operations in the approval service (`freeze_create`, `freeze_list`,
`freeze_thaw`; bus/approval_messages.py): freezes are stored with approvals and grants (SQLite,
workers/approval_store.py), so they survive restarts, and each change is announced at once as
`freeze.set.changed` with the whole set, which every policy worker applies (workers/policy.py).

Why here: the approval service is already the one durable owner of operator decisions (grants),
and it must deny the pending approvals a freeze covers — one process, one transaction order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bus.approval_messages import FREEZES_CHANGED, FreezeCreate, FreezeSet, FreezeThaw
from bus.audit_outbox import AuditOutbox, audit_event
from bus.errors import bad_request
from bus.events import Publisher
from policy.freezes import Freeze, stopping
from workers.approval_store import StateStore

log = logging.getLogger(__name__)

# Deny one pending approval in the freeze's transaction: (approval id, resolved_by, reasoning);
# False when it was resolved meanwhile.
Deny = Callable[[str, str, str], bool]


class FreezeOps:
    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float],
        audit: AuditOutbox | None,
        publisher: Publisher | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.audit = audit
        self.publisher = publisher  # None: nobody to tell (tests); policy workers fetch at start

    def current(self) -> FreezeSet:
        return FreezeSet(revision=self.store.freeze_revision(), freezes=self.store.freezes_active())

    def stopping(self, agent: str, tool: str) -> Freeze | None:
        """The freeze that stops this call, if any (a call decided just before the freeze)."""
        return stopping(map(Freeze.model_validate, self.store.freezes_active()), agent, tool)

    def create(self, body: FreezeCreate, deny: Deny) -> dict[str, Any]:
        targets = [t for t in (body.agent, body.tool) if t is not None] + (
            ["*"] if body.all else []
        )
        if len(targets) != 1 or not targets[0].strip():
            raise bad_request("a freeze names exactly one of: agent (id or glob), tool (glob), all")
        kind = "agent" if body.agent is not None else "tool" if body.tool is not None else "all"
        # One transaction: the freeze, the approvals it denies, their audit events. No call
        # slips between the freeze and the denials: this service runs one operation at a time,
        # and a call submitted after the commit is refused by the stored freeze (op_submit).
        with self.store.transaction():
            record = self.store.freeze_create(
                kind, targets[0].strip(), body.reason, self.clock(), body.created_by or "unknown"
            )
            freeze = Freeze.model_validate(record)
            denied = 0
            for approval in self.store.list_approvals("pending", limit=1_000_000):
                if freeze.stops(approval["agent_id"], approval["tool"]):
                    denied += deny(approval["id"], f"freeze:{freeze.id}", freeze.decision().reason)
            self._audit("freeze.created", record["created_by"], record, denied=denied)
        self._announce()  # once stored: a freeze a crash lost is never announced
        return record | {"denied_approvals": denied}

    def thaw(self, body: FreezeThaw) -> dict[str, Any]:
        with self.store.transaction():
            record = self.store.freeze_thaw(body.id, self.clock(), body.thawed_by or "unknown")
            self._audit("freeze.thawed", record["thawed_by"], record)
        self._announce()
        return record

    def _announce(self) -> None:
        if self.publisher is not None:
            self.publisher.publish(FREEZES_CHANGED, self.current().dump())

    def _audit(self, action: str, actor: str, record: dict[str, Any], **extra: Any) -> None:
        if self.audit is not None:
            detail = {k: record[k] for k in ("kind", "target", "reason")} | extra
            self.audit.add(audit_event(action, actor, record["id"], detail))
