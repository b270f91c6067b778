"""`agent-mesh audit`: check the trace file's hash chain, and sign checkpoints of it
(docs/audit.md). Signing is Ed25519 (the `cryptography` package); a checkpoint is one JSON line of
`<trace_file stem>.checkpoints.jsonl`: `file`, `line`, `hash`, `time`, `key` (the public key's
SHA-256, hex), `signature` (base64, over the canonical JSON of the first four).

    agent-mesh audit verify traces.jsonl                 # rotated files before it included
    agent-mesh audit verify --key audit.pub traces.jsonl # and the signed checkpoints
    agent-mesh audit checkpoint --config c.yaml          # sign where the chain is now
    agent-mesh audit keygen audit.key                    # audit.key (secret) + audit.pub
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from mesh_config.model import LoadedConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `audit` subcommand, for agent_mesh/cli.py."""
    parser = sub.add_parser(
        "audit",
        help="check the trace file's hash chain; sign checkpoints (docs/audit.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = commands.add_parser(
        "verify",
        help="check the chain through the files; exit 1 naming the first line that breaks it",
    )
    check.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="TRACE_FILE",
        help="trace files, oldest first; a live file's rotated files (<file>.000001, ...) are "
        "checked before it unless named themselves",
    )
    check.add_argument("--key", type=Path, help="public key (PEM): check the signed checkpoints")
    check.add_argument(
        "--checkpoints",
        type=Path,
        help="the checkpoints file (default: <stem>.checkpoints.jsonl beside the last file)",
    )
    check.add_argument(
        "--after",
        metavar="HASH",
        help="the hash the first file continues from (its earlier files archived elsewhere)",
    )
    point = commands.add_parser("checkpoint", help="sign where the chain is now (file, line, hash)")
    point.add_argument(
        "--config",
        default="agent-mesh.yaml",
        metavar="FILE",
        help="the mesh's config: its trace_file and audit.signing_key",
    )
    keygen = commands.add_parser(
        "keygen", help="make an Ed25519 key pair: FILE (secret) and its .pub"
    )
    keygen.add_argument("file", type=Path, metavar="FILE", help="the secret key's file (PEM)")


def main(args: argparse.Namespace, load: Callable[[str], LoadedConfig]) -> int:
    """Run `agent-mesh audit ACTION`; `load` reads the config (a bad one: a UserError)."""
    from agent_mesh.audit_log import checkpoint, keygen, verify_command  # only when used
    from agent_mesh.errors import UserError

    if args.audit_command == "verify":
        return verify_command(args.files, args.key, args.checkpoints, args.after)
    if args.audit_command == "checkpoint":
        loaded = load(args.config)
        if loaded.trace_path is None:
            raise UserError(f"{loaded.path}: no trace_file: nothing to checkpoint")
        if loaded.audit_key_path is None:
            raise UserError(
                f"{loaded.path}: set audit.signing_key (make one: agent-mesh audit keygen FILE)"
            )
        print(checkpoint(loaded.trace_path, loaded.audit_key_path))
        return 0
    return keygen(args.file)
