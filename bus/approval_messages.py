"""Typed bodies of the approval service's operations (`approval` on the bus, workers/approval.py;
bus/PROTOCOL.md, Message bodies): one message per operation, told apart by `op`, each docstring
its wire spec. Senders build them typed; the service validates with `APPROVAL_OPS`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, field_validator

from bus.messages import Body

# The approval service (workers/approval.py) owns approvals, grants and decision memory. Each
# request names its operation in `op`; an approval (reply) is the store's record: id, agent_id,
# tool, params, session_id, trace_id, policy_rule, status (pending | approved | denied | timeout),
# created_at, expires_at, resolved_at, resolved_by, reasoning, confidence, replayed_at (epoch s).
# A grant: id, agent, tools, created_at, expires_at, created_by, revoked_at.
# A freeze (the kill switch, policy/freezes.py): id, kind (agent | tool | all), target (the agent
# id or glob, the tool glob, "*" for all), reason, created_at, created_by, thawed_at, thawed_by.

FREEZES_CHANGED = "freeze.set.changed"  # event: `FreezeSet`, after each freeze and thaw


class ApprovalSubmit(Body):
    """→ `approval` `submit`: a call needs approval. Reply: a grant of the agent that covers the
    tool → `{status: approved, approved_by: "grant:<id>", grant_id}`; decision memory approves
    it → `{status: approved, approved_by: "auto:memory", id, approval}`; else a new pending
    approval → `{status: pending, id, approval}` (webhook `pending` sent if configured). With
    `human_only` neither a grant nor memory applies: a tool whose definition changed since it
    was pinned (`pinning.mode: approve`) waits for a human."""

    op: Literal["submit"] = "submit"
    agent: str
    tool: (
        str  # the policy name: `<server>.<tool>`, `<server>.prompt:<p>`, `<server>.resource:<uri>`
    )
    params: dict[str, Any] = Field(default_factory=dict)
    session_id: str = ""
    trace_id: str = ""
    rule: str = ""  # the policy that asked for approval
    callback_url: str | None = None  # POSTed the resolution (X-Callback-Url)
    human_only: bool = False  # no grant, no decision memory: a human decides


class ApprovalWait(Body):
    """→ `approval` `wait`: parks until approval `id` (or an unambiguous prefix) is resolved.
    Reply: the approval. A caller whose worker restarted asks again (the approval is durable)."""

    op: Literal["wait"] = "wait"
    id: str


class ApprovalResolve(Body):
    """→ `approval` `resolve`: approve or deny a pending approval. Reply: the approval. ERROR
    404 no such approval, 409 already resolved, 403 `agent` approving its own call (`agent`: who
    resolves when it is an agent, set by front-ends from the caller's identity; an agent may deny
    — withdraw — its own)."""

    op: Literal["resolve"] = "resolve"
    id: str
    decision: Literal["approve", "deny"]
    resolved_by: str | None = None  # default "human"
    reasoning: str | None = None
    confidence: float | None = None
    agent: str | None = None


class ApprovalClaimReplay(Body):
    """→ `approval` `claim_replay`: mark an approved approval as run (MCP `approval.resolve` runs
    the call at most once). Reply: the approval. ERROR 409 not approved or already replayed."""

    op: Literal["claim_replay"] = "claim_replay"
    id: str


class ApprovalList(Body):
    """→ `approval` `list`: newest first. Reply: `{approvals: [approval as supervisors see it:
    content redacted unless supervisor.expose_content, injection_risk flagged]}`."""

    op: Literal["list"] = "list"
    status: str | None = None
    agent: str | None = None
    tool: str | None = None  # glob, as in policies
    limit: int = Field(default=500, ge=1)


class ApprovalGet(Body):
    """→ `approval` `get`. Reply: `{approval, active_grants: [grant]}`; `raw`: the approval as
    stored (params unredacted: the replaying front-end needs them), else as `list` shows it."""

    op: Literal["get"] = "get"
    id: str
    raw: bool = False


class GrantCreate(Body):
    """→ `approval` `grant_create`: `agent` (a glob) may call `tools` (globs) without approval
    for `duration` (e.g. "30m"). Reply: the grant. ERROR 400 bad globs or duration."""

    op: Literal["grant_create"] = "grant_create"
    agent: str
    tools: list[str]
    duration: str
    created_by: str | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _one_glob(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class GrantList(Body):
    """→ `approval` `grant_list`. Reply: `{grants: [active grant]}`, of `agent` if given."""

    op: Literal["grant_list"] = "grant_list"
    agent: str | None = None


class GrantRevoke(Body):
    """→ `approval` `grant_revoke`. Reply: the grant, revoked. ERROR 404 none or already revoked."""

    op: Literal["grant_revoke"] = "grant_revoke"
    id: str
    revoked_by: str | None = None  # who, for the audit log (default "unknown")


class FreezeCreate(Body):
    """→ `approval` `freeze_create`: stop every new call of `agent` (an id or glob), of the tools
    matching `tool` (a glob of `<server>.<tool>`), or of everything (`all`) — exactly one of the
    three — until thawed. Pending approvals it covers are denied with `reason`. Reply: the freeze;
    `freeze.set.changed` is published. ERROR 400 not exactly one target."""

    op: Literal["freeze_create"] = "freeze_create"
    agent: str | None = None
    tool: str | None = None
    all: bool = False
    reason: str = ""
    created_by: str | None = None


class FreezeList(Body):
    """→ `approval` `freeze_list`. Reply: `FreezeSet`, the freezes in force."""

    op: Literal["freeze_list"] = "freeze_list"


class FreezeThaw(Body):
    """→ `approval` `freeze_thaw`: lift freeze `id` (or a unique prefix). Reply: the freeze,
    thawed; `freeze.set.changed` is published. ERROR 404 none or already thawed."""

    op: Literal["freeze_thaw"] = "freeze_thaw"
    id: str
    thawed_by: str | None = None


class FreezeSet(Body):
    """The freezes in force, oldest first: `freeze_list`'s reply and the `freeze.set.changed`
    event's body. `revision` grows with each freeze and thaw, so a policy worker keeps the newer
    of what it fetched and what it was told."""

    revision: int
    freezes: list[dict[str, Any]]


ApprovalOp = Annotated[
    ApprovalSubmit
    | ApprovalWait
    | ApprovalResolve
    | ApprovalClaimReplay
    | ApprovalList
    | ApprovalGet
    | GrantCreate
    | GrantList
    | GrantRevoke
    | FreezeCreate
    | FreezeList
    | FreezeThaw,
    Field(discriminator="op"),
]
APPROVAL_OPS: TypeAdapter[ApprovalOp] = TypeAdapter(ApprovalOp)  # receivers: validate_python(body)
