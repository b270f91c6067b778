"""The mesh's own MCP tools (compat.md §4): `mesh.catalog`, `grant.create/list/revoke`,
`approval.pending/resolve`. They act for the calling agent, on the approval/state service.

An agent never approves its own calls nor grants itself tools; MCP clients cannot present the
operator token (a token the agent's own connection carried would make the agent the operator):
- Supervisor mode (`supervisor.enabled`): the approval tools are hidden and calling them is a
  JSON-RPC error; calls needing approval block instead.
- `grant.create` is refused ("operator token required" when the mesh has `auth.operator_token`,
  else "cannot grant itself"): grants are the operator's (`POST /grants`). With a token,
  `grant.revoke` is refused too.
- `approval.resolve` on the caller's own pending call: `approve` is refused, `deny` withdraws it
  (with a token both are refused). Once a human approved it (`mesh approve <id>`),
  `approval.resolve` with `approve` replays the original call, once, and returns its result.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from bus import frames
from bus.approval_messages import (
    ApprovalClaimReplay,
    ApprovalGet,
    ApprovalList,
    ApprovalResolve,
    GrantList,
    GrantRevoke,
)
from bus.client import PartialHandler
from bus.errors import BusError
from bus.messages import APPROVAL, Body
from gateway.frontend import FrontEnd
from policy.engine import PolicyEngine

_OBJECT = {"type": "object"}
TOOLS: dict[str, dict[str, Any]] = {
    "mesh.catalog": {
        "description": "Tools of every upstream server, grouped by server, with the policy action "
        "that applies to you for each (allow / deny / human_approval).",
        "inputSchema": {
            "type": "object",
            "properties": {
                "source": {"type": "string", "description": "only this upstream server"}
            },
        },
    },
    "grant.create": {
        "description": "Grants are created by the mesh's operator (`POST /grants`), not by agents: "
        "calling this is refused and says so.",
        "inputSchema": {
            "type": "object",
            "required": ["tools", "duration"],
            "properties": {
                "tools": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "tool globs",
                },
                "duration": {"type": "string", "description": "e.g. 30m, 2h, 1h30m"},
            },
        },
    },
    "grant.list": {"description": "Your active grants.", "inputSchema": _OBJECT},
    "grant.revoke": {
        "description": "Revoke a grant (id or unique prefix).",
        "inputSchema": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}},
        },
    },
    "approval.pending": {"description": "Your calls waiting for approval.", "inputSchema": _OBJECT},
    "approval.resolve": {
        "description": "Get the result of your call once a human approved it "
        "(`mesh approve <id>`): decision approve replays it and returns its result; "
        "decision deny withdraws a pending call. You cannot approve your own call. "
        "id: full or 8-char prefix.",
        "inputSchema": {
            "type": "object",
            "required": ["id", "decision"],
            "properties": {
                "id": {"type": "string"},
                "decision": {"type": "string", "enum": ["approve", "deny"]},
            },
        },
    },
}
APPROVAL_TOOLS = frozenset({"approval.pending", "approval.resolve"})
OPERATOR_ONLY = (
    "operator token required: this mesh has auth.operator_token and an MCP client cannot present it"
)


def text_result(text: str, *, error: bool = False, structured: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": error}
    if structured is not None:
        out["structuredContent"] = structured
    return out


class VirtualTools:
    def __init__(self, frontend: FrontEnd) -> None:
        self.frontend = frontend
        config = frontend.loaded.config
        self.supervisor_mode = config.supervisor.enabled
        self.hidden = config.transparent  # the mesh must be invisible: no tools of its own
        self.operator_only = config.auth.operator_token is not None
        self._static: tuple[str, PolicyEngine] | None = None

    @property
    def static_policy(self) -> PolicyEngine:
        """For catalog views only (no counting), on the policy set in force (live reload)."""
        current = self.frontend.policy_set.current
        if self._static is None or self._static[0] != current.version:
            self._static = (current.version, PolicyEngine(current.policies))
        return self._static[1]

    def listed(self) -> list[dict[str, Any]]:
        if self.hidden:
            return []
        return [
            {"name": name, **tool}
            for name, tool in TOOLS.items()
            if not (self.supervisor_mode and name in APPROVAL_TOOLS)
        ]

    def __contains__(self, name: str) -> bool:
        return name in TOOLS and not self.hidden

    async def call(
        self,
        agent: str,
        name: str,
        arguments: dict[str, Any],
        on_progress: PartialHandler | None = None,
    ) -> dict[str, Any]:
        if name in APPROVAL_TOOLS and self.supervisor_mode:
            raise MCPError(
                types.METHOD_NOT_FOUND,
                f"{name} is not available: supervisor mode is active (approvals are resolved "
                "by the supervisor or a human, not by agents)",
            )
        if name == "grant.create" or (name == "grant.revoke" and self.operator_only):
            why = (
                OPERATOR_ONLY if self.operator_only else f"agent {agent} cannot grant itself tools"
            )
            return text_result(
                f"{name}: refused: {why}; ask the operator (`POST /grants`)", error=True
            )
        if name == "mesh.catalog":
            return self._catalog(agent, arguments.get("source"))
        try:
            if name == "grant.list":
                grants = (await self._state(GrantList(agent=agent)))["grants"]
                return text_result(
                    json.dumps(grants, indent=1) if grants else "no active grants",
                    structured={"grants": grants},
                )
            if name == "grant.revoke":
                grant = await self._state(
                    GrantRevoke(id=str(arguments.get("id", "")), revoked_by=agent)
                )
                return text_result(f"grant {grant['id'][:8]} revoked", structured=grant)
            if name == "approval.pending":
                approvals = (await self._state(ApprovalList(status="pending", agent=agent)))[
                    "approvals"
                ]
                lines = [f"{a['id'][:8]} {a['tool']} {json.dumps(a['params'])}" for a in approvals]
                return text_result(
                    "\n".join(lines) or "nothing pending", structured={"approvals": approvals}
                )
            return await self._resolve(agent, arguments, on_progress)
        except BusError as exc:
            return text_result(f"{name}: {exc.message}", error=True)

    async def _state(self, op: Body) -> Any:
        return await self.frontend.client.request(APPROVAL, op.dump(), timeout=10.0)

    async def _resolve(
        self, agent: str, arguments: dict[str, Any], on_progress: PartialHandler | None
    ) -> dict[str, Any]:
        decision = arguments.get("decision")
        if decision not in ("approve", "deny"):
            raise MCPError(types.INVALID_PARAMS, "decision must be 'approve' or 'deny'")
        approval = (await self._state(ApprovalGet(id=str(arguments.get("id", "")), raw=True)))[
            "approval"
        ]
        if approval["agent_id"] != agent:
            return text_result(
                f"approval {approval['id'][:8]} belongs to another agent", error=True
            )
        if approval["status"] == "pending":  # else a human already decided: keep their decision
            if self.operator_only:
                return text_result(
                    f"approval.resolve: refused: {OPERATOR_ONLY}; a human resolves approval "
                    f"{approval['id'][:8]} (`mesh approve {approval['id'][:8]}`), then call "
                    "approval.resolve again to run it",
                    error=True,
                )
            try:
                approval = await self._state(
                    ApprovalResolve(
                        id=approval["id"],
                        decision=decision,
                        resolved_by=f"agent:{agent}",
                        agent=agent,
                    )
                )
            except BusError as exc:
                if exc.code != frames.FORBIDDEN:  # an agent approving its own call
                    raise
                return text_result(
                    f"approval.resolve: refused: {exc.message}; then call "
                    "approval.resolve again to run it",
                    error=True,
                )
        if approval["status"] != "approved" or decision != "approve":
            return text_result(
                f"approval {approval['id'][:8]} is {approval['status']}; the call was not run",
                error=approval["status"] != "denied",
            )
        claimed = await self._state(ApprovalClaimReplay(id=approval["id"]))  # at most once
        outcome = await self.frontend.pipeline.replay(claimed, on_progress)
        if outcome.status == 200:
            return outcome.result  # type: ignore[no-any-return]
        return text_result(f"approved, but the call failed: {outcome.error}", error=True)

    def _catalog(self, agent: str, source: Any) -> dict[str, Any]:
        """Each tool with the policy action for `agent`; a tool whose definition changed since
        it was pinned says `changed`, one whose description carries injection phrases lists
        them (gateway/pins.py)."""
        servers: dict[str, list[dict[str, Any]]] = {}
        pins = self.frontend.pins
        for view in self.frontend.catalog.servers.values():
            if source and view.name != source:
                continue
            servers[view.name] = [
                {
                    "tool": view.canonical(tool),
                    "action": self.static_policy.evaluate_static(
                        agent, view.canonical(tool)
                    ).action,
                    **pins.status(view.canonical(tool), view.name, listed),
                }
                for tool, listed in view.tools.items()
            ]
        lines = [
            f"{tool['tool']}: {tool['action']}"
            + (" (definition changed, not accepted)" if _changed(tool) else "")
            + (
                f" (description flagged: {', '.join(tool['injection_phrases'])})"
                if tool.get("injection_phrases")
                else ""
            )
            for tools in servers.values()
            for tool in tools
        ]
        return text_result(
            "\n".join(lines) or "no tools", structured={"agent": agent, "servers": servers}
        )


def _changed(tool: dict[str, Any]) -> bool:
    pin = tool.get("pin")
    return isinstance(pin, dict) and pin.get("status") == "changed"
