"""What the REST routes take: one pydantic model per query string and per JSON body.

Handlers receive them validated (gateway/api_route.py) and the OpenAPI document is generated
from them (gateway/openapi.py), so the document cannot drift from what is accepted. As in the
Go project, unknown query parameters and body fields are ignored; a bad value is a 400 naming it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema

MAX_LIMIT = 10_000
_INTEGER = re.compile(r"([+-]?)([0-9]+)\Z")  # ASCII digits, as Go's strconv.Atoi (not "１", "1_0")
HUGE = (
    10**30
)  # past any cap: an integer of more digits is read as this (int() of 5000 digits fails)


def _query_integer(value: Any) -> Any:
    """A query string's integer: digits become an int, "" the default (Go ignores an empty one);
    anything else stays a string, which the strict int refuses."""
    if isinstance(value, str):
        if value == "":
            return 0
        if match := _INTEGER.match(value):
            sign = -1 if match[1] == "-" else 1
            return sign * HUGE if len(match[2]) > 30 else int(value)
    return value


LIMIT_DESCRIPTION = (
    f"At most this many, newest first; 0, empty or absent: the route's default; "
    f"capped at {MAX_LIMIT}."
)
Limit = Annotated[
    int,
    Strict(),
    Field(ge=0, description=LIMIT_DESCRIPTION, examples=[20]),
    BeforeValidator(_query_integer),
    # as Go, an empty `limit=` is the default: the document says so
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 0}],
            "description": LIMIT_DESCRIPTION,
            "examples": [20],
        }
    ),
]


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Limited(Query):
    limit: Limit = 0

    def limit_or(self, default: int) -> int:
        return min(self.limit or default, MAX_LIMIT)


class TracesQuery(Limited):
    agent: str = Field("", description="Only this agent's calls.", examples=["claude"])
    tool: str = Field("", description="Only tools matching this glob.", examples=["filesystem.*"])
    session: str = Field("", description="Only this session's calls (X-Session-Id).")


class OtelTracesQuery(Limited):
    agent: str = Field("", description="Only this agent's calls.", examples=["claude"])
    tool: str = Field("", description="Only tools matching this glob.", examples=["filesystem.*"])


class ApprovalsQuery(Limited):
    status: str = Field(
        "", description="pending, approved, denied or timeout.", examples=["pending"]
    )
    tool: str = Field("", description="Only tools matching this glob.")
    agent: str = Field("", description="Only this agent's calls.")


class GrantsQuery(Query):
    agent: str = Field("", description="Only grants that apply to this agent.")


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ToolCallBody(Body):
    """Go's ToolCallRequest. An empty body is `{}`."""

    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The tool's arguments, passed to the upstream unchanged: any JSON object, integers of "
            "any "
            "size included. Refused (400, naming the path): non-finite numbers, lone surrogates, "
            "nesting deeper than 100."
        ),
        examples=[{"path": "/tmp/mesh-demo"}],
    )


class ResolveBody(Body):
    """Go's resolveRequest; every field optional (an empty body resolves as the caller)."""

    resolved_by: str | None = Field(None, description='Who decided; default "http:<address>".')
    reasoning: str | None = Field(None, description="Why, shown to the agent and in the trace.")
    confidence: float | None = Field(None, description="A supervisor's confidence, 0 to 1.")


class AcceptBody(Body):
    """Accept a tool's changed definition; every field optional."""

    fingerprint: str | None = Field(
        None,
        description="Only if the change is still this definition (its fingerprint or a prefix, "
        "from /health or /tools): a newer change is refused (409), not accepted unseen.",
    )
    accepted_by: str | None = Field(None, description='Who accepted; default "http:<address>".')


NonEmpty = Annotated[str, Field(min_length=1)]
_NUMBER, _UNIT = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)", "(ns|us|µs|μs|ms|s|m|h)"
GO_DURATION = f"^[+]?({_NUMBER}{_UNIT})+$"  # agent_mesh/durations.py reads these


class GrantBody(Body):
    """Go's grantRequest: `tools` a glob, globs joined by ",", or (ours) a list of globs."""

    agent: NonEmpty = Field(
        description="The agent (or agent glob) the grant is for.", examples=["claude"]
    )
    tools: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)] = Field(
        description="Tool glob(s) the grant allows.", examples=["filesystem.*"]
    )
    duration: str = Field(
        pattern=GO_DURATION,
        description="How long: a Go duration (30m, 2h, 1h30m), more than zero.",
        examples=["30m"],
    )
    created_by: str | None = Field(None, description='Who granted; default "http:<address>".')


class FreezeBody(Body):
    """The kill switch: exactly one of `agent`, `tool`, `all` (else 400)."""

    agent: NonEmpty | None = Field(
        None, description="Freeze this agent (an id, or a glob).", examples=["claude"]
    )
    tool: NonEmpty | None = Field(
        None,
        description="Freeze the tools matching this glob (<server>.<tool>).",
        examples=["filesystem.write_*"],
    )
    all: Annotated[bool, Strict()] = Field(False, description="Freeze every call of every agent.")
    reason: str = Field("", description="Why: told to every refused caller, traced, audited.")
    created_by: str | None = Field(None, description='Who froze; default "http:<address>".')
