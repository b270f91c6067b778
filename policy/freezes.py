"""The kill switch, as a policy worker applies it: the freezes in force and which one stops a call.

A freeze stops every new call of one agent (`agent`: an id, or a glob), of the tools matching a
glob (`tool`: the policy name, `<server>.<tool>`), or of everything (`all`). It is checked before
any policy rule, rate limit, grant or decision memory: an operator who pulls the switch does not
have to think about what else might let a call through. Freezes are stored and announced by the
approval service (workers/approval.py, `freeze.changed` on the bus; docs in README, Kill switch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from policy.globs import glob_matches
from policy.model import Decision

FreezeKind = Literal["agent", "tool", "all"]


class Freeze(BaseModel):
    """One freeze in force (the approval service's record: `target` is "*" for `all`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    kind: FreezeKind
    target: str
    reason: str = ""
    created_at: float = 0.0
    created_by: str = ""

    def stops(self, agent: str, tool: str) -> bool:
        if self.kind == "all":
            return True
        return glob_matches(self.target, agent if self.kind == "agent" else tool)

    def what(self) -> str:
        """What is frozen, in the caller's words."""
        return "every call" if self.kind == "all" else f"{self.kind} {self.target}"

    def decision(self) -> Decision:
        """The refusal of a call this freeze stops: traced as `policy_rule: freeze:<id>`."""
        why = f"; reason: {self.reason}" if self.reason else ""
        return Decision(
            action="deny",
            rule=f"freeze:{self.id}",
            reason=f"frozen by the kill switch ({self.what()}, freeze {self.id[:8]}){why}",
        )


def stopping(freezes: Iterable[Freeze], agent: str, tool: str) -> Freeze | None:
    """The first freeze (oldest) that stops `agent` calling `tool`, or None."""
    for freeze in freezes:
        if freeze.stops(agent, tool):
            return freeze
    return None
