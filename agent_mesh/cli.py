"""The `agent-mesh` command (compat.md §5).

Every failure a user can cause is one line on stderr (what failed, what to do) and a non-zero
exit status; `--debug` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

try:  # Ctrl-C while these load (a second on a busy machine): a quiet exit, as in main()
    import agent_mesh
    from agent_mesh import audit, keys
    from agent_mesh.errors import UserError
    from agent_mesh.roles import ROLES
    from mesh_config.file import ENV_OPENAPI, ENV_OPENAPI_BACKEND, load_config
    from mesh_config.model import ConfigError, LoadedConfig
except KeyboardInterrupt:
    raise SystemExit(130) from None

DEFAULT_CONFIG = "agent-mesh.yaml"
CONFIG_HELP = f"the mesh's config file (default {DEFAULT_CONFIG})"

MODES = """modes:
  agent-mesh --config c.yaml [--port N]     run the mesh (as `serve`; Ctrl-C stops it)
  agent-mesh --mcp --config c.yaml          stdio MCP server for Claude Code / Cursor: attaches to
                                            the mesh of c.yaml, starting it if none runs
  agent-mesh connect --url URL              stdio MCP relay to a running mesh's /mcp

`agent-mesh COMMAND --help` tells more about each command."""

ROLE_HELP = {
    "broker": "the ZeroMQ bus every other process talks through",
    "gateway": "HTTP: the REST API and MCP Streamable HTTP (/mcp)",
    "policy": "decides allow / deny / human_approval / rate_limited (--slot N of policy_workers)",
    "tracer": "stores traces (JSONL trace_file and the SQLite index)",
    "approval": "pending approvals, grants and decision memory (SQLite)",
    "upstream": "one tool source's worker: MCP server, CLI tool or OpenAPI import (--server NAME, "
    "--slot N of its workers)",
    "lifecycle": "stops a mesh started by --mcp once its last client has gone",
}


def _port(text: str) -> int:
    """A TCP port (argparse type): a bad one is a usage error, not a bind() traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-mesh",
        description="Governance gateway for AI agents' MCP tool calls.",
        usage="agent-mesh [--mcp] [--config FILE] [--port N] [options]\n"
        "       agent-mesh {serve,connect,check,discover,run,keys,audit,supervisor} ...",
        epilog=MODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"agent-mesh {agent_mesh.__version__}"
    )
    parser.add_argument(
        "--mcp",
        action="store_true",
        help="stdio MCP front-end (Claude Code, Cursor): attach to the mesh of --config, "
        "starting it if none runs; stdout carries MCP frames only",
    )
    parser.add_argument("--config", dest="top_config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument(
        "--port",
        dest="top_port",
        type=_port,
        metavar="N",
        help="HTTP port, overriding the config's `port` (not with --mcp)",
    )
    parser.add_argument(
        "--mcp-agent",
        default="claude",
        metavar="ID",
        help="with --mcp: the agent id of this session (default claude)",
    )
    parser.add_argument(
        "--mcp-session-id",
        metavar="ID",
        help="with --mcp: the session id recorded in traces (default: generated)",
    )
    parser.add_argument(
        "--openapi",
        metavar="SPEC",
        help="also serve this OpenAPI document's operations as tools (a URL or a "
        "file; as an `openapi:` entry of the config)",
    )
    parser.add_argument(
        "--backend",
        metavar="URL",
        help="with --openapi: the API's base URL (default: the document's first server)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="agent-mesh")

    serve = sub.add_parser(
        "serve",
        help="run the mesh under supervisord (foreground; Ctrl-C stops it)",
        description="Run the mesh under supervisord, in the foreground: Ctrl-C or "
        "SIGTERM stop the whole process tree. Exits non-zero if a "
        "process of the tree cannot be kept running.",
    )
    serve.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=CONFIG_HELP)
    serve.add_argument(
        "--port", type=_port, metavar="N", help="HTTP port, overriding the config's `port`"
    )
    serve.add_argument(
        "--embedded", action="store_true", help=argparse.SUPPRESS
    )  # started by --mcp

    connect = sub.add_parser(
        "connect",
        help="stdio MCP relay to a mesh's /mcp (local or remote)",
        description="Relay MCP between stdio (Claude Code) and a running mesh's "
        "/mcp endpoint, as one agent.",
    )
    connect.add_argument(
        "--url",
        default="http://127.0.0.1:9090",
        help="the mesh's HTTP address, or its /mcp URL (default http://127.0.0.1:9090)",
    )
    connect.add_argument(
        "--agent",
        "--mcp-agent",
        dest="agent",
        default="claude",
        help="agent id sent as the bearer (default claude)",
    )

    check = sub.add_parser(
        "check",
        help="validate a config file and print its warnings",
        description="Validate a config file: its fields, policies, and that "
        "each stdio server's command can be found.",
    )
    check.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=CONFIG_HELP)

    discover = sub.add_parser(
        "discover",
        help="start each upstream, list its tools; --generate-policy writes a starter policy",
        description="Start each tool source of the config (no mesh needed), list its tools with a "
        "one-line description, and stop them. With --generate-policy, also write a "
        "starter policy: read-only-looking tools allowed, the rest human_approval, "
        "then deny.",
    )
    discover.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=CONFIG_HELP)
    discover.add_argument(
        "--generate-policy",
        action="store_true",
        help="write a starter policy YAML (stdout, or --output FILE)",
    )
    discover.add_argument(
        "--agent",
        default="*",
        metavar="NAME",
        help="with --generate-policy: the agent (pattern) the policy is for (default *)",
    )
    discover.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="with --generate-policy: write the policy here instead of stdout",
    )

    roles = "\n".join(f"  {name:<10} {what}" for name, what in ROLE_HELP.items())
    run = sub.add_parser(
        "run",
        help="run one process of the tree (what supervisord starts)",
        description="Run one process of the mesh's tree; `serve` starts them all.",
        epilog=f"roles:\n{roles}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "role", choices=ROLES, metavar="ROLE", help=f"one of: {', '.join(ROLES)} (below)"
    )
    run.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=CONFIG_HELP)
    run.add_argument(
        "--server", help="upstream: which tool source (mcp_servers, cli_tools, openapi)"
    )
    run.add_argument("--slot", type=int, default=0, help="process number (stable worker name)")
    run.add_argument("--port", type=_port, help="gateway: override the config's port")
    run.add_argument(
        "--connect",
        help="tcp://host:port of a broker on another host (broker: the tcp "
        "address to serve; default $AGENT_MESH_LISTEN, else bus.listen)",
    )
    run.add_argument(
        "--keys",
        help="CURVE keys: the broker's keys dir, or this host's client bundle "
        "(docs/multihost.md; default $AGENT_MESH_KEYS, broker: else bus.keys)",
    )

    keys.add_parser(sub)
    audit.add_parser(sub)
    # Listed for --help; `main` hands `agent-mesh supervisor ...` to autoresolve.cli whole.
    sub.add_parser(
        "supervisor",
        add_help=False,
        help="auto-resolve pending approvals with rules and a local LLM (--config supervisor.yaml)",
    )
    return parser


def _load(path: str) -> LoadedConfig:
    if path == DEFAULT_CONFIG and not os.path.exists(path):
        raise UserError(_no_config())
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _no_config() -> str:
    """No --config, and no agent-mesh.yaml here: where we looked, and how to name one."""
    examples = os.path.join(os.path.dirname(os.path.dirname(agent_mesh.__file__)), "examples")
    shown = os.path.relpath(examples) if examples.startswith(os.getcwd() + os.sep) else examples
    start = os.path.join(shown, "filesystem.yaml")
    return (
        f"no config: {DEFAULT_CONFIG} (the default) is not in {os.getcwd()}; name one with "
        "--config PATH"
        + (
            f", e.g. --config {start} (the shipped examples: {shown}/)"
            if os.path.exists(start)
            else ""
        )
    )


def _load_for_role(path: str) -> LoadedConfig:
    """A process of a running tree (`run`): if the file has become invalid since the mesh started
    (a live edit), start on the mesh's last valid config rather than fail
    (mesh_config/last_good.py)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        from mesh_config.last_good import last_good

        fallback = last_good(path, exc)
        if fallback is None:
            raise UserError(str(exc)) from None
        print(f"agent-mesh run: warning: {fallback.warnings[0]}", file=sys.stderr)
        return fallback


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["supervisor"]:  # its own command line: autoresolve.cli
        from autoresolve.cli import main as supervisor_main

        sys.exit(supervisor_main(argv[1:]))
    # `run` is what supervisord starts: its failures keep their tracebacks, for the role's log.
    debug = "--debug" in argv or argv[:1] == ["run"]
    try:
        sys.exit(_main([a for a in argv if a != "--debug"], debug))
    except UserError as exc:
        if debug:
            raise
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # not foreseen: still one line, the traceback with --debug
        if debug:
            raise
        leaf = _leaf(exc)
        _fail(
            str(leaf)
            if isinstance(leaf, UserError)
            else f"{type(leaf).__name__}: {leaf} (--debug shows the traceback)"
        )


def _fail(message: str) -> NoReturn:
    print(f"agent-mesh: {message}", file=sys.stderr)
    sys.exit(1)


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups (anyio task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _main(argv: list[str], debug: bool) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.backend and not args.openapi:
        parser.error("--backend goes with --openapi (the API whose base URL it is)")
    if args.openapi:  # every process of the tree loads it too (mesh_config/file.py)
        os.environ[ENV_OPENAPI] = args.openapi
        os.environ[ENV_OPENAPI_BACKEND] = args.backend or ""
    if args.mcp:
        if args.command is not None:
            parser.error(f"--mcp runs on its own, not with {args.command}")
        if args.top_port is not None:
            parser.error(
                "--port does not apply to --mcp (the mesh it starts uses the config's port)"
            )
        from agent_mesh import ports
        from agent_mesh.attach import ensure_mesh, release_lease
        from bus.state_dir import running_pid
        from gateway import stdio

        loaded = _load(args.top_config or DEFAULT_CONFIG)
        if running_pid(loaded.state_dir()) is None:  # we will start it: can it listen?
            taken = ports.problem(
                loaded.config.host, loaded.config.port, f"set port: in {loaded.path}"
            )
            if taken is not None:
                raise UserError(taken)
        endpoints, lease = ensure_mesh(loaded)  # attach, or start the mesh and attach
        try:
            return int(
                stdio.main(
                    loaded,
                    endpoints,
                    args.mcp_agent,
                    args.mcp_session_id,
                    leave=lambda: release_lease(lease),
                )
                or 0
            )
        finally:
            release_lease(lease)
    if args.command is None:
        if args.top_config is None and args.top_port is None:
            parser.print_help(sys.stderr)
            return 2
        args.command, args.config, args.port, args.embedded = (
            "serve",
            args.top_config or DEFAULT_CONFIG,
            args.top_port,
            False,
        )
    if args.command == "serve":
        from agent_mesh.launcher import serve

        return serve(_load(args.config), port=args.port, embedded=args.embedded)
    if args.command == "connect":
        from agent_mesh import connect

        return connect.main(args.url, args.agent)
    if args.command == "check":
        from agent_mesh.check import check

        return check(_load(args.config))
    if args.command == "discover":
        from agent_mesh.discover import run as discover_run

        if not args.generate_policy and (args.agent != "*" or args.output):
            parser.error("--agent and --output go with --generate-policy")
        return discover_run(_load(args.config), args.generate_policy, args.agent, args.output)
    if args.command == "run":
        from agent_mesh.roles import run_role

        run_role(
            args.role,
            _load_for_role(args.config),
            server=args.server,
            slot=args.slot,
            port=args.port,
            connect=args.connect,
            keys=args.keys,
        )
        return 0
    if args.command == "keys":
        return keys.main(args)
    if args.command == "audit":
        return audit.main(args, _load)
    parser.error(f"unknown command {args.command}")
