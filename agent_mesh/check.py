"""`agent-mesh check`: the config validates (done by loading it), and every stdio upstream's
command can be started as the worker will start it (in the server's `cwd`, by default the
config file's directory, with its `env` over ours). A CLI tool whose `working_dir` or `bin` is
missing is a warning: a config written for another machine (the Go project's examples) runs."""

from __future__ import annotations

import difflib
import os
import sys

from mesh_config.model import LoadedConfig
from workers import cli_runner
from workers.commands import command_problem


def problems(loaded: LoadedConfig, notes: list[str] | None = None) -> list[str]:
    return audit_key_problems(loaded) + command_problems(loaded) + _openapi_problems(loaded, notes)


def audit_key_problems(loaded: LoadedConfig) -> list[str]:
    """The signing key the trace writer will load for `audit.checkpoint_every`, if unusable."""
    key = loaded.audit_key_path
    if loaded.config.audit.checkpoint_every is None or key is None:
        return []
    from workers.audit_checkpoint import SigningKeyError, load_signing_key

    try:
        load_signing_key(key)
    except SigningKeyError as exc:
        return [f"{loaded.path}: {exc}"]
    return []


def command_problems(loaded: LoadedConfig) -> list[str]:
    """Each stdio server whose command cannot be started here (`serve` warns of these too)."""
    out = []
    for i, server in enumerate(loaded.config.mcp_servers):
        if server.transport != "stdio" or not server.command or server.workers == 0:
            continue  # served elsewhere (workers: 0): its command runs on another host
        cwd = server.cwd or str(loaded.path.parent)
        problem = command_problem(server.command, cwd, {**os.environ, **server.env})
        if problem is not None:
            out.append(f"{loaded.path}: mcp_servers[{i}] ({server.name}): {problem}")
    return out


def _openapi_problems(loaded: LoadedConfig, notes: list[str] | None = None) -> list[str]:
    """Each `file:` document is read and turned into tools as its worker will (a `url:` is
    fetched by the worker only); two unnamed imports must not make the same tool. What the
    validator says of a document that still loads goes to `notes` (warnings)."""
    import asyncio

    from workers.openapi_source import read_spec
    from workers.openapi_spec import SpecError

    out: list[str] = []
    owner: dict[str, str] = {}
    for i, (ref, source) in enumerate(
        (r, r.config) for r in loaded.config.sources() if r.kind == "openapi"
    ):
        if source.file is None:
            continue
        try:
            spec = asyncio.run(read_spec(source, validate=notes is not None))
        except SpecError as exc:
            out.append(f"{loaded.path}: openapi[{i}]: {exc}")
            continue
        if notes is not None:
            notes += [
                f"openapi[{i}]: {source.file} does not validate (it loads all the same): {p}"
                for p in spec.problems
            ]
        clashes: dict[str, list[str]] = {}
        for op in spec.operations:
            name = ref.prefix + op.tool
            if name in owner:
                clashes.setdefault(owner[name], []).append(name)
            owner.setdefault(name, f"openapi[{i}]")
        out += [
            f"{loaded.path}: openapi[{i}]: {len(names)} of its tools are also made by {other} "
            f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): give one of them a "
            "`name:` (its tools become <name>.<tool>)"
            for other, names in clashes.items()
        ]
    return out


# Tools of the mesh's own (MCP front-ends): `mesh.catalog`, `grant.create`, `approval.resolve`...
OWN_PREFIXES = {"mesh", "grant", "approval"}


def rule_warnings(loaded: LoadedConfig) -> list[str]:
    """A rule's glob whose `<server>.` names no tool source (a typo: `filesytem.*`) matches no
    tool, so the rule never applies. Not said when an unnamed OpenAPI import's tools (no
    `<server>.`, their names known at run time only) could be meant."""
    refs = loaded.config.sources()
    if any(not ref.prefix for ref in refs):
        return []
    servers = {ref.name for ref in refs}
    out = []
    for i, policy in enumerate(loaded.config.policies):
        for j, rule in enumerate(policy.rules):
            for k, glob in enumerate(rule.tools):
                server, dot, _ = glob.partition(".")
                if not dot or any(c in server for c in "*?[") or server in servers | OWN_PREFIXES:
                    continue
                close = difflib.get_close_matches(server, sorted(servers), n=1)
                out.append(
                    f"policies[{i}] (name={policy.name}).rules[{j}].tools[{k}]: {glob!r} matches "
                    f"no tool: no server is named {server!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                )
    return out


def warnings(loaded: LoadedConfig) -> list[str]:
    out = list(loaded.warnings) + rule_warnings(loaded)
    for i, tool in enumerate(loaded.config.cli_tools):
        cwd = tool.working_dir or "."
        path = cli_runner.environment(tool.env)["PATH"]
        if tool.workers and not os.path.isdir(cwd):
            out.append(
                f"cli_tools[{i}] ({tool.name}): working_dir {cwd} is not a directory: its "
                "calls will fail until it exists"
            )
        elif tool.workers and cli_runner.resolve_bin(tool.bin, cwd, path) is None:
            out.append(
                f"cli_tools[{i}] ({tool.name}): bin {tool.bin!r} not found"
                + ("" if "/" in tool.bin else " on PATH")
                + ": its calls will fail until it is installed"
            )
    return out


def check(loaded: LoadedConfig) -> int:
    notes: list[str] = []
    found = problems(loaded, notes)
    for warning in warnings(loaded) + notes:
        print(f"warning: {warning}")
    for problem in found:
        print(f"agent-mesh: {problem}", file=sys.stderr)
    if found:
        return 1
    config = loaded.config
    print(
        f"{loaded.path}: ok ({len(config.mcp_servers)} servers, {len(config.cli_tools)} cli tools, "
        f"{len(config.openapi)} openapi, {len(config.policies)} policies)"
    )
    return 0
