"""The `agent-mesh` command (compat.md §5)."""

from __future__ import annotations

import argparse
import sys

import agent_mesh
from agent_mesh import keys
from agent_mesh.config import ConfigError, LoadedConfig, load_config
from agent_mesh.roles import ROLES

DEFAULT_CONFIG = "agent-mesh.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-mesh", description="Governance gateway for MCP tool calls")
    parser.add_argument("--version", action="version", version=f"agent-mesh {agent_mesh.__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the mesh under supervisord (foreground; Ctrl-C stops it)")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--port", type=int)
    serve.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)  # started by --mcp

    connect = sub.add_parser("connect", help="stdio MCP relay to a mesh's /mcp (local or remote)")
    connect.add_argument("--url", default="http://127.0.0.1:9090")
    connect.add_argument("--agent", "--mcp-agent", dest="agent", default="claude", help="agent id (bearer)")

    check = sub.add_parser("check", help="validate a config file and print its warnings")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    run = sub.add_parser("run", help="run one process of the tree (what supervisord starts)")
    run.add_argument("role", choices=ROLES)
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--server", help="upstream: which mcp_servers entry")
    run.add_argument("--slot", type=int, default=0, help="process number (stable worker name)")
    run.add_argument("--port", type=int, help="gateway: override the config's port")
    run.add_argument("--connect", help="tcp://host:port of a broker on another host (broker: the tcp "
                                       "address to serve; default $AGENT_MESH_LISTEN, else bus.listen)")
    run.add_argument("--keys", help="CURVE keys: the broker's keys dir, or this host's client bundle "
                                    "(docs/multihost.md; default $AGENT_MESH_KEYS, broker: else bus.keys)")

    keys.add_parser(sub)
    # Listed for --help; `main` hands `agent-mesh supervisor ...` to autoresolve.cli whole.
    sub.add_parser("supervisor", add_help=False,
                   help="auto-resolve pending approvals with rules and a local LLM (--config supervisor.yaml)")
    return parser


def _load(path: str) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        sys.exit(f"agent-mesh: {exc}")


def _mcp_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-mesh --mcp", description="stdio MCP front-end (Claude Code)")
    parser.add_argument("--mcp", action="store_true", required=True)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--mcp-agent", default="claude", help="agent id of this session (default claude)")
    parser.add_argument("--mcp-session-id", help="session id recorded in traces (default: generated)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["supervisor"]:
        from autoresolve.cli import main as supervisor_main

        sys.exit(supervisor_main(argv[1:]))
    if "--mcp" in argv:
        args = _mcp_parser().parse_args(argv)
        from gateway import stdio

        sys.exit(stdio.main(_load(args.config), args.mcp_agent, args.mcp_session_id))
    # Plain `agent-mesh --config c.yaml [--port N]` is `serve` (compatibility with the Go CLI).
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "serve")
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from agent_mesh.launcher import serve

        serve(_load(args.config), port=args.port, embedded=args.embedded)
    elif args.command == "connect":
        from gateway import connect

        sys.exit(connect.main(args.url, args.agent))
    elif args.command == "check":
        loaded = _load(args.config)
        for warning in loaded.warnings:
            print(f"warning: {warning}")
        print(f"{loaded.path}: ok ({len(loaded.config.mcp_servers)} servers, {len(loaded.config.policies)} policies)")
    elif args.command == "run":
        from agent_mesh.roles import run_role

        run_role(args.role, _load(args.config), server=args.server, slot=args.slot, port=args.port,
                 connect=args.connect, keys=args.keys)
    elif args.command == "keys":
        sys.exit(keys.main(args))
