"""Policy models: the `policies:` part of the config file (compat.md §1-2).

Shared by the config loader (which validates YAML into these) and the engine (which reads them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["allow", "deny", "human_approval"]
# What a decision can say: a rule's action, or a limit that fired before any rule was tried.
Verdict = Literal["allow", "deny", "human_approval", "rate_limited"]
Operator = Literal["<", "<=", ">", ">=", "==", "!="]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    field: str = Field(min_length=1)
    operator: Operator
    value: Any


class Rule(_Strict):
    tools: list[str] = Field(min_length=1)
    action: Action
    condition: Condition | None = None


class RateLimit(_Strict):
    max_per_minute: int | None = Field(default=None, ge=1)
    max_total: int | None = Field(default=None, ge=1)


class Policy(_Strict):
    name: str = Field(min_length=1)
    agent: str = Field(min_length=1)
    rate_limit: RateLimit | None = None
    rules: list[Rule] = Field(default_factory=list)


class Decision(_Strict):
    """The outcome of evaluating one call: action, the rule that decided, and why."""

    action: Verdict
    rule: str  # policy name, "grant:<id>", "default", "rate_limit" or "loop_detection"
    reason: str


class Grant(_Strict):
    """A temporary allow: turns `human_approval` into `allow` for matching calls until expiry."""

    id: str = Field(min_length=1)
    agent: str = Field(min_length=1)  # exact id or glob
    tools: list[str] = Field(min_length=1)  # tool globs
    expires_at: float  # unix seconds; the grant is live while expires_at > now
