"""Tool sources besides MCP servers (compat.md §1): `cli_tools:` and `openapi:` as config models,
and `SourceRef`, what every part of the mesh needs to know about any tool source (MCP server,
CLI tool, OpenAPI import) to run, route and show it the same way.

Every source is served by its own worker processes on the bus as `upstream.<name>`
(workers/upstream.py), whatever it is an adapter for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from policy.durations import parse_duration
from policy.model import Action, Policy, Rule

CLI_DEFAULT_TIMEOUT = 30.0  # s, per command (as in the Go project)
CLI_MAX_OUTPUT = 1 << 20  # bytes kept of stdout and of stderr each (as in the Go project)
OPENAPI_DEFAULT_TIMEOUT = 30.0  # s, per backend request
# A CLI subcommand as a tool name part: `terraform.init`, `gh.pr.list` (one word per dot). No
# leading '-' (it would be an option), nothing a shell or a path would read specially.
SUBCOMMAND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*")
DISPATCH = "__dispatch"  # the Go project's catch-all tool of a non-strict CLI tool


def _positive_duration(value: str) -> str:
    if parse_duration(value) <= 0:  # parse_duration's ValueError names what is wrong
        raise ValueError("must be a positive duration")
    return value


_Duration = Annotated[str, AfterValidator(_positive_duration)]
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must contain only letters, digits, '_' and '-' (tools are <name>.<tool>)")
    return value


_Name = Annotated[str, AfterValidator(_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):  # `key:` with nothing after it: not set (as Go's yaml)
            return {k: v for k, v in data.items() if v is not None}
        return data


class CliCommand(_Section):
    allowed_args: list[str] | None = None  # None: any flag; a list: only these flags
    timeout: _Duration | None = None

    @property
    def timeout_seconds(self) -> float:
        return CLI_DEFAULT_TIMEOUT if self.timeout is None else parse_duration(self.timeout)


class CliTool(_Section):
    name: _Name
    bin: str = Field(min_length=1)
    default_action: Action = "deny"  # when no policy rule decides for one of its tools
    strict: bool = False  # true: only declared commands exist
    working_dir: str | None = None  # made absolute (config-relative) by load_config
    env: dict[str, str] = Field(default_factory=dict)
    commands: dict[str, CliCommand] = Field(default_factory=dict)
    # extensions
    workers: int = Field(default=1, ge=0, le=64)
    max_output_bytes: int = Field(default=CLI_MAX_OUTPUT, ge=1024)  # of stdout and stderr each

    @field_validator("commands", mode="before")
    @classmethod
    def _empty_commands(cls, value: Any) -> Any:
        # `status:` (YAML null) declares a command with no options, like `status: {}`.
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("commands")
    @classmethod
    def _command_names(cls, value: dict[str, CliCommand]) -> dict[str, CliCommand]:
        bad = [name for name in value if not SUBCOMMAND.fullmatch(name)]
        if bad:
            raise ValueError(
                f"command name {bad[0]!r}: must be words of letters, digits, '_' and '-' "
                "joined by '.' (e.g. plan, pr.list), not starting with '-'"
            )
        return value

    @model_validator(mode="after")
    def _strict_needs_commands(self) -> CliTool:
        if self.strict and not self.commands:
            raise ValueError("commands: strict: true needs at least one command")
        return self

    @property
    def timeout_seconds(self) -> float:
        """The longest any of its commands may run: what a caller waits for at most."""
        return max([CLI_DEFAULT_TIMEOUT, *(c.timeout_seconds for c in self.commands.values())])


class OpenApiSource(_Section):
    file: str | None = None  # made absolute (config-relative) by load_config
    url: str | None = None
    backend_url: str | None = None  # else the spec's first server
    # extensions
    name: _Name | None = None  # tools are `<name>.<tool>`; without it, bare (as in the Go project)
    headers: dict[str, str] = Field(default_factory=dict)  # sent with every backend request
    timeout: _Duration | None = None  # per backend request, default 30s
    workers: int = Field(default=1, ge=0, le=64)

    @model_validator(mode="after")
    def _exactly_one(self) -> OpenApiSource:
        if (self.file is None) == (self.url is None):
            which = "both were given" if self.file is not None else "neither was given"
            raise ValueError(f"exactly one of 'file' or 'url' is required; {which}")
        for field, value in (("url", self.url), ("backend_url", self.backend_url)):
            if value is not None and not re.match(r"https?://[^/?#]+", value):
                raise ValueError(f"{field}: must be an http:// or https:// URL, got {value!r}")
        return self

    @property
    def timeout_seconds(self) -> float:
        return OPENAPI_DEFAULT_TIMEOUT if self.timeout is None else parse_duration(self.timeout)


Kind = Literal["mcp", "cli", "openapi"]


@dataclass(frozen=True)
class SourceRef:
    """One tool source as the mesh runs it: bus service `upstream.<name>`, its tools named
    `<prefix><tool>` in policies and traces and `<exposed_prefix><tool>` for MCP clients."""

    name: str
    kind: Kind
    transport: str  # stdio | sse | streamable_http | cli | openapi (for /mcp-servers)
    prefix: str
    exposed_prefix: str
    timeout_seconds: float  # per call, what a caller waits for at most
    workers: int
    # a non-strict CLI tool: any `<name>.<subcommand>` is one of its tools, and the Go project's
    # `<name>.__dispatch` with a `command` param means `<name>.<command>`
    any_subcommand: bool = False
    config: Any = None  # the McpServer, CliTool or OpenApiSource it was made from


def openapi_service_name(source: OpenApiSource, index: int) -> str:
    """`upstream.<this>` on the bus: its `name`, else `openapi-<position in openapi:>`."""
    return source.name or f"openapi-{index}"


def cli_ref(tool: CliTool) -> SourceRef:
    return SourceRef(
        tool.name,
        "cli",
        "cli",
        f"{tool.name}.",
        f"{tool.name}.",
        tool.timeout_seconds,
        tool.workers,
        not tool.strict,
        tool,
    )


def openapi_ref(source: OpenApiSource, index: int) -> SourceRef:
    prefix = f"{source.name}." if source.name else ""
    return SourceRef(
        openapi_service_name(source, index),
        "openapi",
        "openapi",
        prefix,
        prefix,
        source.timeout_seconds,
        source.workers,
        False,
        source,
    )


def default_action_policies(tools: list[CliTool]) -> list[Policy]:
    """A CLI tool's `default_action` decides its calls that no policy rule decides: as a
    policy for every agent, tried after all others (the least specific pattern, last)."""
    return [
        Policy(
            name=f"default_action:{t.name}",
            agent="*",
            rules=[Rule(tools=[f"{t.name}.*"], action=t.default_action)],
        )
        for t in tools
        if t.default_action != "deny"
    ]  # deny: what no match means anyway


def duplicate_names(section: str, kind: str, names: list[str]) -> list[str]:
    """Each name of a config section that an earlier entry has (`<section>[i] (name=...)`)."""
    first: dict[str, int] = {}
    problems = []
    for i, name in enumerate(names):
        if name in first:
            problems.append(
                f"{section}[{i}] (name={name}): duplicate {kind} name {name!r} "
                f"(also {section}[{first[name]}])"
            )
        first.setdefault(name, i)
    return problems


_SECTION = {"mcp": "mcp_servers", "cli": "cli_tools", "openapi": "openapi"}


def source_clashes(sources: list[SourceRef]) -> list[str]:
    """A name is one bus service and one tool prefix: it must be unique across every section."""
    first: dict[str, tuple[str, int]] = {}
    index: dict[str, int] = {}
    problems = []
    for ref in sources:
        section = _SECTION[ref.kind]
        i = index[section] = index.get(section, -1) + 1
        seen = first.setdefault(ref.name, (section, i))
        if seen != (section, i) and (section != seen[0] or section != "mcp_servers"):
            kind = "cli tool" if section == "cli_tools" and seen[0] == section else "source"
            problems.append(
                f"{section}[{i}] (name={ref.name}): duplicate {kind} name {ref.name!r} "
                f"(also {seen[0]}[{seen[1]}])"
            )
    return problems
