"""Reading a config file (compat.md §1): YAML with line numbers and duplicate-key checks,
`${VAR}` expansion (mesh_config/env.py), validation into `mesh_config.model` models,
`policy_dir`, and ONE `ConfigError` that lists every problem as `<file>: <field path>: <problem>`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mesh_config.env import Loc, expand
from mesh_config.model import (
    ApprovalConfig,
    BusConfig,
    Config,
    ConfigError,
    LoadedConfig,
    McpServer,
    SupervisorConfig,
    _absolute,
)
from mesh_config.sources import CliCommand, CliTool, OpenApiSource, default_action_policies
from policy.model import Condition, Policy, RateLimit, Rule


def load_config(path: str | Path) -> LoadedConfig:
    """Load and validate a config file; raise one ConfigError listing every problem."""
    shown, absolute = str(path), Path(path).expanduser().resolve()
    problems: list[str] = []
    warnings: list[str] = []
    data, node = _read_mapping(absolute, shown, problems)
    if data is None:
        raise ConfigError(path, problems)
    if (other := supervisor_file_problem(data, shown)) is not None:
        raise ConfigError(path, [other])
    data = _expanded(data, node, shown, problems)
    config = _validate(Config, data, node, shown, problems)
    extra: list[tuple[str, Policy]] = []
    if isinstance(data.get("policy_dir"), str):
        raw = os.path.expanduser(data["policy_dir"])
        shown_dir = os.path.normpath(os.path.join(os.path.dirname(shown), raw))
        extra = _load_policy_dir(_absolute(absolute.parent, raw), shown_dir, problems, warnings)
    if config is not None:  # names are unique within the file; check policy_dir against all
        where = {p.name: f"{shown}: policies[{i}]" for i, p in enumerate(config.policies)}
        for shown_file, policy in extra:
            if policy.name in where:
                problems.append(
                    f"{shown_file}: name: duplicate policy name {policy.name!r} "
                    f"(also {where[policy.name]})"
                )
            where.setdefault(policy.name, shown_file)
    if config is not None and (flagged := _flag_openapi(config, os.getcwd(), problems)) is not None:
        config = flagged
    if problems or config is None:
        raise ConfigError(path, problems)

    servers = [
        s if s.cwd is None else s.model_copy(update={"cwd": str(_absolute(absolute.parent, s.cwd))})
        for s in config.mcp_servers
    ]
    policies = [
        *config.policies,
        *(p for _, p in extra),
        *default_action_policies(config.cli_tools),
    ]
    config = config.model_copy(
        update={
            "policies": policies,
            "mcp_servers": servers,
            **_sources_made_absolute(config, absolute.parent),
        }
    )
    return LoadedConfig(config=config, path=absolute, warnings=warnings)


# Keys of the supervisor's own config file (autoresolve/config.py) under its top-level
# `supervisor:`, which the mesh's `supervisor:` section (enabled, expose_content) does not have.
SUPERVISOR_FILE_KEYS = frozenset(
    {"mesh_url", "poll_interval", "tool_filter", "operator_token", "agent"}
    | {"mesh_process", "llm", "ollama", "memory", "rules"}
)


def supervisor_file_problem(data: dict[str, Any], shown: str) -> str | None:
    """A supervisor config given where a mesh config goes: one line saying so and what takes
    it, rather than an `unknown key` per supervisor setting."""
    section = data.get("supervisor")
    if set(data) != {"supervisor"} or not isinstance(section, dict):
        return None
    keys = [str(k) for k in section if k in SUPERVISOR_FILE_KEYS]
    if not keys:
        return None
    process = section.get("mesh_process")
    mesh = process.get("config") if isinstance(process, dict) else None
    its_mesh = (
        f"; its mesh config (mesh_process.config) is "
        f"{os.path.normpath(os.path.join(os.path.dirname(shown), os.path.expanduser(mesh)))}"
        if isinstance(mesh, str)
        else ""
    )
    return (
        f"{shown}: this is a supervisor config (supervisor: {', '.join(keys[:3])}"
        f"{', ...' if len(keys) > 3 else ''}), not a mesh config: run it with "
        f"`agent-mesh supervisor --config {shown}`{its_mesh}"
    )


# `agent-mesh --openapi SPEC [--backend URL]` (compat.md §5): one more `openapi:` source, set in
# the environment by the command so that every process of the mesh's tree (and a mesh that
# `--mcp` starts, or a reload) loads the same sources.
ENV_OPENAPI = "AGENT_MESH_OPENAPI"
ENV_OPENAPI_BACKEND = "AGENT_MESH_OPENAPI_BACKEND"


def _flag_openapi(config: Config, cwd: str, problems: list[str]) -> Config | None:
    spec = os.environ.get(ENV_OPENAPI)
    if not spec:
        return None
    where = "url" if spec.startswith(("http://", "https://")) else "file"
    fields = {
        where: spec if where == "url" else str(_absolute(Path(cwd), spec)),
        "backend_url": os.environ.get(ENV_OPENAPI_BACKEND) or None,
    }
    try:
        added = OpenApiSource.model_validate(fields)
        return Config.model_validate(
            {**config.model_dump(exclude_unset=True), "openapi": [*config.openapi, added]}
        )
    except ValidationError as exc:
        problem = (
            exc.errors()[0]["msg"]
            .removeprefix("Value error, ")
            .replace("backend_url:", "--backend:")
        )
        problems.append(f"--openapi {spec}: {problem}")
        return None


def _sources_made_absolute(config: Config, base: Path) -> dict[str, Any]:
    """CLI tools run in their `working_dir` (default: the config file's directory); an OpenAPI
    `file` is relative to the config file."""
    tools = [
        t.model_copy(update={"working_dir": str(_absolute(base, t.working_dir or "."))})
        for t in config.cli_tools
    ]
    specs = [
        o if o.file is None else o.model_copy(update={"file": str(_absolute(base, o.file))})
        for o in config.openapi
    ]
    return {"cli_tools": tools, "openapi": specs}


def _load_policy_dir(
    directory: Path, shown_dir: str, problems: list[str], warnings: list[str]
) -> list[tuple[str, Policy]]:
    """Every *.yaml / *.yml file (by name; dot-files skipped) is one policy."""
    if not directory.exists():
        warnings.append(f"policy_dir: {shown_dir} does not exist; no policies loaded from it")
        return []
    try:
        files = sorted(
            f.name
            for f in directory.iterdir()
            if f.suffix in (".yaml", ".yml") and not f.name.startswith(".")
        )
    except OSError as exc:
        problems.append(f"{shown_dir}: policy_dir: cannot list: {exc.strerror or exc}")
        return []
    loaded = []
    for name in files:
        shown_file = os.path.join(shown_dir, name)
        data, node = _read_mapping(directory / name, shown_file, problems)
        data = None if data is None else _expanded(data, node, shown_file, problems)
        policy = None if data is None else _validate(Policy, data, node, shown_file, problems)
        if policy is not None:
            loaded.append((shown_file, policy))
    return loaded


def _read_mapping(file: Path, shown: str, problems: list[str]) -> tuple[dict[str, Any] | None, Any]:
    """Read a YAML mapping: (data, root node), or (None, None) after appending a problem."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{shown}: file not found")
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown}: cannot read: {exc}")
        return None, None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node, shown)
        problems.extend(duplicates)
        data = None if duplicates or node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        at = [
            f"line {m.line + 1}, column {m.column + 1}" if m else ""
            for m in (exc.problem_mark, exc.context_mark)
        ]
        context = f" ({exc.context} at {at[1]})" if exc.context and at[1] else ""
        problems.append(f"{shown}: invalid YAML: {at[0]}: {exc.problem}{context}")
        return None, None
    except yaml.YAMLError as exc:
        problems.append(f"{shown}: invalid YAML: {exc}")
        return None, None
    finally:
        loader.dispose()
    if duplicates:
        return None, None
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got {type(data).__name__}"
        problems.append(f"{shown}: the top level must be a mapping; {got}")
        return None, None
    return data, node


def _duplicate_keys(root: Any, shown: str) -> list[str]:
    """PyYAML silently keeps the last of two equal keys; a governance config must not."""
    found: list[tuple[int, str]] = []
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            continue
        seen.add(id(node))
        mapping = isinstance(node, yaml.MappingNode)
        pairs = node.value if mapping else [(None, item) for item in node.value]
        first: dict[tuple[str, str], int] = {}
        for key, value in pairs:
            stack.append(value)
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                at = first[key.tag, key.value]
                message = f"{shown}: line {line}: duplicate key {key.value!r} (first at line {at})"
                found.append((line, message))
            first.setdefault((key.tag, key.value), line)
    return [message for _, message in sorted(found)]


def _expanded(data: dict[str, Any], node: Any, shown: str, problems: list[str]) -> dict[str, Any]:
    """`${VAR}` expanded from the environment; a problem names the field and its line."""

    def report(loc: Loc, problem: str) -> None:
        where, line = _where(node, loc)
        problems.append(f"{shown}: {where}: {problem} (line {line})")

    result: dict[str, Any] = expand(data, os.environ, report)
    return result


_M = TypeVar("_M", bound=BaseModel)


def _validate(
    model: type[_M], data: dict[str, Any], node: Any, shown: str, problems: list[str]
) -> _M | None:
    """Validate; on failure render every pydantic error as `<file>: <path>: <problem>`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
            message = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
            if kind == "extra_forbidden":
                known = [
                    k for k in _known_keys() if k != str(loc[-1])
                ]  # (valid elsewhere, not here)
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                message = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
            elif (
                kind != "missing"
                and isinstance(value, (str, int, float))
                and not (
                    {"env", "headers", "operator_token"} & set(loc)
                    or repr(value) in message  # secrets
                )
            ):
                message += f", got {value!r}"
            path, line = _where(node, loc)
            problems.extend(
                f"{shown}: {path}: {m} (line {line})" if path else f"{shown}: {m}"
                for m in message.split("\n")
            )
        return None


def _known_keys() -> list[str]:
    models = (
        Config,
        ApprovalConfig,
        SupervisorConfig,
        BusConfig,
        McpServer,
        CliTool,
        CliCommand,
        OpenApiSource,
        Policy,
        Rule,
        Condition,
        RateLimit,
    )
    return sorted({f.alias or key for model in models for key, f in model.model_fields.items()})


def _where(node: Any, loc: tuple[Any, ...]) -> tuple[str, int]:
    """For a pydantic loc: the path `policies[1] (name=claude).rules[0].action` and its line."""
    path, line = "", node.start_mark.line + 1
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            items = node.value if isinstance(node, yaml.SequenceNode) else []
            node = items[part] if 0 <= part < len(items) else None
            line = node.start_mark.line + 1 if node is not None else line
            name = _child(node, "name")[1]
            path += f" (name={name.value})" if isinstance(name, yaml.ScalarNode) else ""
        else:
            path += f".{part}" if path else str(part)
            key, node = _child(node, str(part))
            line = key.start_mark.line + 1 if key is not None else line
    return path, line


def _child(node: Any, key: str) -> tuple[Any, Any]:
    """(key node, value node) of `key` in a YAML mapping node, else (None, None)."""
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    return next(
        ((k, v) for k, v in reversed(pairs) if getattr(k, "value", None) == key), (None, None)
    )
