"""The agent-mesh config (compat.md §1) as validated models, plus `LoadedConfig` (a config and
where it came from). Reading files is `mesh_config.file.load_config`."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bus.endpoints import parse_tcp
from mesh_config.sources import (
    CliTool,
    OpenApiSource,
    SourceRef,
    cli_ref,
    duplicate_names,
    openapi_ref,
    source_clashes,
)
from policy.durations import parse_duration
from policy.model import Policy

Transport = Literal["stdio", "sse", "streamable_http", "http"]


class ConfigError(Exception):
    """An unusable config. `problems` holds one `<file>: <path>: <problem>` line per problem."""

    def __init__(self, file: str | Path, problems: list[str]) -> None:
        self.file, self.problems = Path(file), list(problems)
        many = f"{len(problems)} problems in config {file}:\n  " if len(problems) > 1 else ""
        super().__init__(many + "\n  ".join(problems))


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _is_tcp_address(value: str) -> bool:
    try:
        parse_tcp(value)
    except ValueError:
        return False
    return value.startswith("tcp://")


def _checked(ok: Callable[[str], object], problem: str) -> AfterValidator:
    def check(value: str) -> str:
        if not ok(value):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_NAME_RULE = "must contain only letters, digits, '_' and '-' (tools are <name>.<tool>)"
Name = Annotated[str, _checked(_NAME_RE.fullmatch, _NAME_RULE)]
HttpUrl = Annotated[str, _checked(_is_http_url, "must be an http:// or https:// URL")]
Endpoint = Annotated[
    str,
    _checked(
        lambda v: v == "stdout" or _is_http_url(v), "must be 'stdout' or an http:// or https:// URL"
    ),
]
TcpAddress = Annotated[
    str, _checked(_is_tcp_address, "must be tcp://host:port, e.g. tcp://0.0.0.0:7000")
]
# A Go duration ("30s", "5m", "1h30m"); parse_duration's ValueError names what is wrong.
Duration = Annotated[str, _checked(lambda v: parse_duration(v) > 0, "must be a positive duration")]


MAX_GATEWAY_PROCESSES = 64


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # `key:` with nothing after it is YAML null; like Go's yaml, treat it as "not set".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ApprovalConfig(_Section):
    timeout_seconds: int = Field(default=300, gt=0)
    notify_url: HttpUrl | None = None  # webhook POSTed when an approval becomes pending
    # extension: Level-1 memory — auto-approve after this many human approvals of the same
    # agent + tool + parameter shape; 0 turns it off
    memory_threshold: int = Field(default=3, ge=0)


class AuthConfig(_Section):
    # extension: when set, approving, denying and granting over HTTP need this token
    # (`X-Operator-Token: <token>`), and MCP clients cannot do either. Empty (e.g.
    # `${MESH_OPERATOR_TOKEN:-}` with the variable unset) means not set; without a token an
    # agent still cannot approve its own calls or grant itself tools (docs in README).
    operator_token: str | None = Field(default=None, min_length=8)

    @field_validator("operator_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


class SupervisorConfig(_Section):
    enabled: bool = False  # true: hide approval.resolve / approval.pending; calls block
    expose_content: bool = True  # false: redact content params in the approvals API


class MetricsConfig(_Section):
    """Extension: Prometheus metrics at `GET /metrics` (docs/observability.md)."""

    enabled: bool = True
    # agent ids that get their own label value; later ones are counted as `other` (cardinality)
    max_agents: int = Field(default=100, ge=0, le=10_000)
    max_tools: int = Field(
        default=1000, ge=0, le=100_000
    )  # the same for tool names (CLI subcommands)


class AuditConfig(_Section):
    """Extension: the tamper-evident trace file (docs/audit.md)."""

    # the trace file is renamed `<trace_file>.000001`, ... once past this size; None: never
    rotate_mb: float | None = Field(default=None, gt=0)
    # Ed25519 private key (PEM) that signs `agent-mesh audit checkpoint` (config-relative)
    signing_key: str | None = None
    # the trace writer signs a checkpoint this often (when the chain moved) and at each rotation
    checkpoint_every: Duration | None = None

    @model_validator(mode="after")
    def _key_for_checkpoints(self) -> AuditConfig:
        if self.checkpoint_every is not None and self.signing_key is None:
            raise ValueError(
                "checkpoint_every needs signing_key, the key that signs them "
                "(make one: agent-mesh audit keygen FILE)"
            )
        return self

    @property
    def rotate_bytes(self) -> int | None:
        return None if self.rotate_mb is None else max(1, int(self.rotate_mb * 1_000_000))

    @property
    def checkpoint_seconds(self) -> float | None:
        return None if self.checkpoint_every is None else parse_duration(self.checkpoint_every)


class BusConfig(_Section):
    """Extension: the broker also serves its bus on tcp, CURVE only, for workers on other hosts
    (docs/multihost.md). Read by the broker; --connect/--keys and $AGENT_MESH_LISTEN /
    $AGENT_MESH_KEYS override it."""

    listen: TcpAddress | None = None
    keys: str | None = Field(
        default=None, min_length=1
    )  # the broker's keys dir (`agent-mesh keys`)

    @model_validator(mode="after")
    def _keys_with_listen(self) -> BusConfig:
        if self.listen is not None and self.keys is None:
            raise ValueError(
                "keys: required when listen is set (the CURVE keys directory made by "
                "`agent-mesh keys`; the bus is never served on tcp in the clear)"
            )
        return self


class GatewayConfig(_Section):
    """Extension: `processes` HTTP gateway processes on the one port (SO_REUSEPORT), sharing the
    bus; `auto`: one per core (docs/architecture.md, "Front-ends on every core")."""

    processes: int | Literal["auto"] = 1

    @field_validator("processes", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_GATEWAY_PROCESSES):
            return value
        raise ValueError(
            f"must be a number of processes from 1 to {MAX_GATEWAY_PROCESSES} or auto "
            f"(one per core), not {value!r}"
        )

    @property
    def count(self) -> int:
        if self.processes == "auto":
            return max(1, min(MAX_GATEWAY_PROCESSES, os.cpu_count() or 1))
        return self.processes


class PinningConfig(_Section):
    """Extension: what a call of a tool whose definition changed since it was pinned gets until
    an operator accepts the change (docs/pinning.md): `block` refuses it, `approve` asks a
    human, `warn` only records the change."""

    mode: Literal["block", "approve", "warn"] = "approve"


class McpServer(_Section):
    name: Name
    transport: Transport = "stdio"  # "http" is normalised to "streamable_http"
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None  # extension; made absolute (config-relative) by load_config
    url: HttpUrl | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # extension: upstream worker processes started here; 0: served only by workers on other hosts
    workers: int = Field(default=1, ge=0, le=64)
    timeout_seconds: float = Field(default=60.0, gt=0)  # extension: per-call timeout
    # extension: how MCP clients see this server's tools and prompts: `<prefix><name>`.
    # Default "<name>."; "" keeps the upstream's own names (transparent mode). Policies and
    # traces always use the canonical `<server>.<tool>`, whatever the prefix.
    prefix: str | None = None
    pinning: PinningConfig = Field(default_factory=PinningConfig)  # extension: tool pinning

    @property
    def exposed_prefix(self) -> str:
        return f"{self.name}." if self.prefix is None else self.prefix

    @field_validator("transport", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return "streamable_http" if value == "http" else value

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServer:
        t = self.transport
        if t == "stdio" and (not self.command or self.url is not None):
            raise ValueError(
                "url: not allowed for transport 'stdio' (use command)"
                if self.command
                else "command: required for transport 'stdio'"
            )
        if t != "stdio" and (self.command is not None or not self.url):
            raise ValueError(
                f"command: not allowed for transport {t!r} (use url)"
                if self.command
                else f"url: required for transport {t!r}"
            )
        return self


class Config(_Section):
    port: int = Field(default=9090, ge=1, le=65535)
    host: str = Field(default="127.0.0.1", min_length=1)  # extension: bind address
    trace_file: str | None = None  # as written; see LoadedConfig.trace_path
    otel_endpoint: Endpoint | None = None  # "stdout" or an OTLP/HTTP URL
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    policy_dir: str | None = None  # as written; see LoadedConfig.policy_dir_path
    mcp_servers: list[McpServer] = Field(default_factory=list)
    cli_tools: list[CliTool] = Field(default_factory=list)
    openapi: list[OpenApiSource] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    policy_workers: int = Field(default=1, ge=1, le=64)  # extension: policy worker processes
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    # extension: a mesh started by `--mcp` stops this long after its last client left
    grace_seconds: float = Field(default=10.0, ge=0)
    # extension: Origin values accepted on /mcp besides the mesh's own host (DNS rebinding guard)
    allowed_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        problems = (
            ["audit.checkpoint_every: needs trace_file (the chain it signs)"]
            if self.audit.checkpoint_every is not None and self.trace_file is None
            else []
        ) + (
            duplicate_names("policies", "policy", [p.name for p in self.policies])
            + duplicate_names("mcp_servers", "server", [s.name for s in self.mcp_servers])
            + duplicate_names(
                "mcp_servers", "tool prefix", [s.exposed_prefix for s in self.mcp_servers]
            )
            + source_clashes(self.sources())
        )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def transparent(self) -> bool:
        """Every upstream keeps its own names: MCP clients should not see the mesh at all."""
        return (
            bool(self.mcp_servers)
            and not self.cli_tools
            and not self.openapi
            and all(s.exposed_prefix == "" for s in self.mcp_servers)
        )

    def server(self, name: str) -> McpServer | None:
        return next((s for s in self.mcp_servers if s.name == name), None)

    def sources(self) -> list[SourceRef]:
        """Every tool source, each served as `upstream.<name>`: MCP servers, CLI tools, OpenAPI."""
        return (
            [
                SourceRef(
                    s.name,
                    "mcp",
                    s.transport,
                    f"{s.name}.",
                    s.exposed_prefix,
                    s.timeout_seconds,
                    s.workers,
                    config=s,
                )
                for s in self.mcp_servers
            ]
            + [cli_ref(t) for t in self.cli_tools]
            + [openapi_ref(o, i) for i, o in enumerate(self.openapi)]
        )

    def source(self, name: str) -> SourceRef | None:
        return next((s for s in self.sources() if s.name == name), None)


def _absolute(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path  # absolute
    warnings: list[str] = field(default_factory=list)

    @property
    def trace_path(self) -> Path | None:
        trace = self.config.trace_file
        return None if trace is None else _absolute(self.path.parent, trace)

    @property
    def audit_key_path(self) -> Path | None:
        key = self.config.audit.signing_key
        return None if key is None else _absolute(self.path.parent, key)

    @property
    def policy_dir_path(self) -> Path | None:
        pdir = self.config.policy_dir
        return None if pdir is None else _absolute(self.path.parent, pdir)

    @property
    def bus_keys_path(self) -> Path | None:
        keys = self.config.bus.keys
        return None if keys is None else _absolute(self.path.parent, keys)

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(str(self.path).encode()).hexdigest()[:12]

    def state_dir(self) -> Path:
        """`$AGENT_MESH_HOME/<hash>`, else `~/.agent-mesh/<hash>`. Not created here."""
        home = os.environ.get("AGENT_MESH_HOME")
        return (Path(home).expanduser() if home else Path.home() / ".agent-mesh") / self.config_hash
