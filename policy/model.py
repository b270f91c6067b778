"""Policy models: the `policies:` part of the config file (compat.md §1-2).

Shared by the config loader (which validates YAML into these) and the engine (which reads them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from policy.condition_check import check
from policy.durations import parse_duration  # a pure parser: no I/O comes with it

Action = Literal["allow", "deny", "human_approval"]
# What a decision can say: a rule's action, or a limit that fired before any rule was tried.
Verdict = Literal["allow", "deny", "human_approval", "rate_limited"]
# The Go project's six comparisons, then conditions v2's (an extension; policy/conditions.py).
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
Operator = Literal[
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "within",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """One of: a comparison `{field, operator, value}` (the Go form), `{all: [...]}`,
    `{any: [...]}` or `{not: {...}}`. Checked whole at load (policy/condition_check.py): a
    `matches` regex is compiled here, a `within` path normalised, so evaluating never fails."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str | None = Field(default=None, min_length=1)
    operator: Operator | None = None
    value: Any = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")
    # What `value` becomes for evaluation: a compiled regex (matches), a normalised path (within).
    _compiled: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        self._compiled = check(self)
        return self

    @property
    def compiled(self) -> Any:
        return self._compiled


class Rule(_Strict):
    tools: list[str] = Field(min_length=1)
    action: Action
    condition: Condition | None = None


class RateLimit(_Strict):
    """A policy's limits, checked before its rules; a policy without `rate_limit` has none,
    loop detection included (as in the Go project)."""

    max_per_minute: int | None = Field(default=None, ge=1)
    max_total: int | None = Field(default=None, ge=1)
    # Loop detection (extension: configurable; Go's fixed values are the defaults): more than
    # `loop_threshold` identical calls (same agent, tool and params) within `loop_window` are
    # refused, i.e. the 4th within 10 s by default. 0 turns it off.
    loop_threshold: int = Field(default=3, ge=0)
    loop_window: float = Field(default=10.0, gt=0)  # seconds; YAML "10s", "1m" or a number

    @field_validator("loop_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)  # its ValueError names what is wrong
        if isinstance(value, bool):  # YAML `yes`; never a duration
            # pydantic reports a ValueError as a validation error (a TypeError would escape)
            raise ValueError("must be a duration such as '10s' or a number of seconds")  # noqa: TRY004
        return value


class Policy(_Strict):
    name: str = Field(min_length=1)
    agent: str = Field(min_length=1)
    rate_limit: RateLimit | None = None
    rules: list[Rule] = Field(default_factory=list)


class Decision(_Strict):
    """The outcome of evaluating one call: action, the rule that decided, and why."""

    action: Verdict
    rule: str  # policy name, "default", "rate_limit" or "loop_detection"
    reason: str
