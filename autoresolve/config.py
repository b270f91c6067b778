"""The supervisor's config file (`agent-mesh supervisor --config supervisor.yaml`, compat.md §7):
validated models, rule conditions compiled at load, and one ConfigError listing every problem as
`<file>: <field path>: <problem> (line N)`, like the mesh's own config."""

from __future__ import annotations

import difflib
import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

from autoresolve.conditions import Call, Condition, parse
from mesh_config.file import SUPERVISOR_FILE_KEYS, _read_mapping, _where
from mesh_config.model import Config, ConfigError, Duration, HttpUrl, _Section
from policy.durations import parse_duration
from policy.globs import glob_matches

Action = Literal["approve", "deny", "escalate"]
DEFAULT_MESH_URL = "http://localhost:9090"
TOKEN_ENV = "MESH_OPERATOR_TOKEN"


def _condition(value: Any) -> Condition | None:
    return value if value is None or isinstance(value, Condition) else parse(value)


class Rule(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    tools: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # tool globs
    condition: Annotated[Condition | None, PlainValidator(_condition)] = None  # None: every call
    action: Action
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    reasoning: str | None = None  # default: "rule <name>: <condition>"

    def applies(self, call: Call) -> bool:
        tool = str(call.get("tool", ""))
        if not any(glob_matches(pattern, tool) for pattern in self.tools):
            return False
        return self.condition is None or self.condition.holds(call)

    def explain(self) -> str:
        if self.reasoning:
            return self.reasoning
        why = f"condition {self.condition.source}" if self.condition else "no condition"
        return f"rule {self.name} ({', '.join(self.tools)}; {why})"


class LlmConfig(_Section):
    enabled: bool = True
    provider: Literal["ollama", "openai_compatible"] = "ollama"
    url: HttpUrl = "http://localhost:11434"  # ollama; an OpenAI-compatible server: its base URL
    model: str = Field(min_length=1)
    api: Literal["chat", "generate"] = "chat"  # ollama endpoint: /api/chat or /api/generate
    stream: bool = False
    timeout: Duration = "60s"  # the whole answer, streamed or not; past it: escalate
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)  # below: escalate
    api_key: str | None = None  # openai_compatible: sent as a bearer (default $OPENAI_API_KEY)
    instructions: str | None = None  # the operator's guidance, added to the system prompt
    concurrency: int = Field(default=1, ge=1, le=32)  # model calls at once

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


class MemoryConfig(_Section):
    path: str | None = None  # SQLite file; default $AGENT_MESH_HOME/supervisor/<hash>/decisions.db
    context: int = Field(
        default=5, ge=0, le=50
    )  # recent decisions on the agent+tool given to the LLM
    # also write decisions to (and read them from) an MCP memory server through the mesh
    mcp_tool_prefix: str | None = Field(default=None, min_length=1)


class MeshProcessConfig(_Section):
    enabled: bool = False
    command: str | list[str] = "agent-mesh"  # a string is split like a shell would
    config: str | None = None  # the mesh's config file (relative: to this file)
    args: list[str] = Field(default_factory=list)
    start_timeout: Duration = "60s"
    health_interval: Duration = "1s"
    unhealthy_after: int = Field(default=10, ge=1)  # failed checks of a live mesh before a restart
    restart_backoff: Duration = "1s"  # doubles per failed start, up to restart_backoff_max
    restart_backoff_max: Duration = "30s"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)

    @model_validator(mode="after")
    def _config_when_enabled(self) -> MeshProcessConfig:
        if self.enabled and not self.config:
            raise ValueError("config: required when enabled (the mesh's config file)")
        if not self.argv:
            raise ValueError("command: empty")
        return self


class Settings(_Section):
    mesh_url: HttpUrl | None = None  # default: the mesh_process config's host:port, else :9090
    poll_interval: Duration = "250ms"  # a blocked call waits up to this long for a rule decision
    tool_filter: str | None = None  # only approvals whose tool matches this glob (?tool=)
    operator_token: str | None = Field(default=None, min_length=8)  # $MESH_OPERATOR_TOKEN wins
    agent: str = Field(default="supervisor", min_length=1)  # bearer for its own tool calls
    mesh_process: MeshProcessConfig = Field(default_factory=MeshProcessConfig)
    llm: LlmConfig | None = None
    ollama: LlmConfig | None = None  # compat.md's spelling of `llm` with provider ollama
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _checks(self) -> Settings:
        if self.llm is not None and self.ollama is not None:
            raise ValueError("llm: and ollama: are the same section; keep one")
        if self.ollama is not None and self.ollama.provider != "ollama":
            raise ValueError("ollama: provider must be ollama here; use llm: for other providers")
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(
                    f"rules[{i}]: duplicate rule name {rule.name!r} (also rules[{seen[rule.name]}])"
                )
            seen[rule.name] = i
        return self

    @property
    def model(self) -> LlmConfig | None:
        chosen = self.llm or self.ollama
        return chosen if chosen is not None and chosen.enabled else None

    @property
    def poll_seconds(self) -> float:
        return parse_duration(self.poll_interval)


class SupervisorFile(_Section):
    supervisor: Settings


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    path: Path  # absolute

    def resolve(self, value: str) -> Path:
        return (self.path.parent / Path(value).expanduser()).resolve()

    @property
    def mesh_config_path(self) -> Path | None:
        config = self.settings.mesh_process.config
        return None if config is None else self.resolve(config)

    @property
    def memory_path(self) -> Path:
        if self.settings.memory.path:
            return self.resolve(self.settings.memory.path)
        home = os.environ.get("AGENT_MESH_HOME")
        base = Path(home).expanduser() if home else Path.home() / ".agent-mesh"
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        return base / "supervisor" / digest / "decisions.db"

    @property
    def operator_token(self) -> str | None:
        return os.environ.get(TOKEN_ENV) or self.settings.operator_token

    def mesh_url(self) -> str:
        """The configured URL; else the managed mesh's own host:port; else localhost:9090."""
        if self.settings.mesh_url:
            return self.settings.mesh_url.rstrip("/")
        mesh = self.mesh_config_path
        if mesh is not None:
            from mesh_config.file import load_config

            try:
                config = load_config(mesh).config
            except ConfigError:
                return DEFAULT_MESH_URL
            host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
            return f"http://{host}:{config.port}"
        return DEFAULT_MESH_URL


def load(path: str | Path) -> Loaded:
    """Read and validate a supervisor config; one ConfigError lists every problem."""
    shown, absolute = str(path), Path(path).expanduser().resolve()
    problems: list[str] = []
    data, node = _read_mapping(absolute, shown, problems)
    if data is None:
        raise ConfigError(path, problems)
    if (other := _mesh_file_problem(data, shown)) is not None:
        raise ConfigError(path, [other])
    try:
        parsed = SupervisorFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_problem(error, node, shown) for error in exc.errors()]) from None
    return Loaded(parsed.supervisor, absolute)


def _mesh_file_problem(data: dict[str, Any], shown: str) -> str | None:
    """A mesh config given where a supervisor config goes (both have a `supervisor:`): one line
    saying so, rather than an `unknown key` per mesh setting."""
    section = data.get("supervisor")
    if isinstance(section, dict) and SUPERVISOR_FILE_KEYS & set(section):
        return None
    mesh = [str(k) for k in data if k in Config.model_fields and k != "supervisor"]
    if not mesh:
        return None
    return (
        f"{shown}: this is a mesh config ({', '.join(mesh[:3])}{', ...' if len(mesh) > 3 else ''}"
        f"), not a supervisor config: run it with `agent-mesh serve --config {shown}`, or name it "
        "in a supervisor config's mesh_process.config (examples/supervisor.yaml)"
    )


def _problem(error: Any, node: Any, shown: str) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    message = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(), n=1)
        message = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
    elif (
        kind not in ("missing", "value_error")
        and isinstance(value, str | int | float)
        and "token" not in str(loc[-1])
        and "key" not in str(loc[-1])
    ):  # may be a secret
        message += f", got {value!r}"
    where, line = _where(node, loc)
    return f"{shown}: {where}: {message} (line {line})" if where else f"{shown}: {message}"


def _known_keys() -> list[str]:
    models: tuple[type[BaseModel], ...] = (
        SupervisorFile,
        Settings,
        Rule,
        LlmConfig,
        MemoryConfig,
        MeshProcessConfig,
    )
    return sorted({key for model in models for key in model.model_fields})
