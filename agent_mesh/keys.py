"""`agent-mesh keys`: the CURVE keys that let workers on other hosts join the bus over tcp
(docs/multihost.md). Layout of a keys directory (everything owner-only: dirs 0700, files 0600):

    broker.key, broker.key_secret    the broker's keypair; the secret never leaves this host
    authorized/<name>.key            public keys the broker accepts (remove one to revoke it)
    clients/<name>/                  one bundle per client host: client.key_secret (its keypair)
                                     and broker.key; copy the directory there, point --keys at it

    agent-mesh keys --client host-b --client host-c     # broker keypair (once) + two bundles
    agent-mesh keys --revoke host-c                     # host-c can no longer connect
    agent-mesh keys                                     # list what is there
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
from pathlib import Path

import zmq

from bus.endpoints import (
    AUTHORIZED_DIR,
    BROKER_KEY,
    CLIENT_KEY,
    CLIENTS_DIR,
    CurveServer,
    KeysError,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV = "AGENT_MESH_KEYS"


def default_dir() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    home = os.environ.get("AGENT_MESH_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".agent-mesh") / "keys"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `keys` subcommand, for agent_mesh/cli.py."""
    parser = sub.add_parser(
        "keys",
        help="CURVE keys for workers on other hosts (docs/multihost.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"keys directory (default ${ENV}, else $AGENT_MESH_HOME/keys, ~/.agent-mesh/keys)",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="make a keypair and bundle for this client host (repeatable)",
    )
    parser.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="NAME",
        help="stop accepting this client's key (and delete its bundle)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing client's keypair")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-mesh")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run `agent-mesh keys` on parsed arguments (from cli.py) or on an argument list."""
    if not isinstance(args, argparse.Namespace):
        args = _parser().parse_args(["keys", *(sys.argv[1:] if args is None else args)])
    keys_dir: Path = (args.dir or default_dir()).expanduser().resolve()
    try:
        for name in [*args.client, *args.revoke]:
            _check_name(name)
        made_broker = ensure_broker(keys_dir)
        if made_broker:
            print(f"made the broker keypair: {keys_dir / (BROKER_KEY + '.key_secret')}")
        for name in args.revoke:
            revoke(keys_dir, name)
            print(f"revoked {name}: {keys_dir / AUTHORIZED_DIR / (name + '.key')} removed")
        for name in args.client:
            bundle = make_client(keys_dir, name, force=args.force)
            print(
                f"made client {name}: copy {bundle}/ to that host and run its workers with --keys "
                "<that copy>"
            )
        CurveServer.from_dir(keys_dir)  # what the broker will load: fail here, not at its start
    except KeysError as exc:
        print(f"agent-mesh keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the directory cannot be made or written
        print(
            f"agent-mesh keys: {exc.filename or keys_dir}: {exc.strerror or exc}; choose another "
            "with --dir",
            file=sys.stderr,
        )
        return 1
    authorized = sorted(p.stem for p in (keys_dir / AUTHORIZED_DIR).glob("*.key"))
    print(
        f"{keys_dir}: broker keypair; {len(authorized)} authorised client(s): "
        f"{', '.join(authorized) or '-'}"
    )
    return 0


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name in (BROKER_KEY, CLIENT_KEY):
        raise KeysError(
            f"invalid client name {name!r}: letters, digits, '_', '-', '.' (not broker/client)"
        )


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start (never readable by others, not even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cert(public: bytes, secret: bytes | None, what: str) -> str:
    # The ZPL certificate format of zmq.auth (load_certificate reads it back).
    kind = "Secret" if secret else "Public"
    lines = [
        (
            f"#   ****  Generated on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S}Z by "
            "agent-mesh keys  ****"
        ),
        f"#   ZeroMQ CURVE **{kind}** Certificate: {what}",
    ]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _keypair(directory: Path, name: str, what: str) -> bytes:
    public, secret = zmq.curve_keypair()
    _write_private(directory / f"{name}.key_secret", _cert(public, secret, what))
    _write_private(directory / f"{name}.key", _cert(public, None, what))
    return public


def ensure_broker(keys_dir: Path) -> bool:
    """Make the directory layout and the broker keypair if missing; True if a keypair was made.
    An existing broker keypair is never replaced (every client bundle holds its public key)."""
    _private_dir(keys_dir)
    _private_dir(keys_dir / AUTHORIZED_DIR)
    _private_dir(keys_dir / CLIENTS_DIR)
    if (keys_dir / f"{BROKER_KEY}.key_secret").exists():
        if not (keys_dir / f"{BROKER_KEY}.key").exists():
            raise KeysError(
                f"{keys_dir / (BROKER_KEY + '.key')}: missing (the broker's public key)"
            )
        return False
    _keypair(keys_dir, BROKER_KEY, "agent-mesh broker")
    return True


def make_client(keys_dir: Path, name: str, *, force: bool = False) -> Path:
    """A keypair for client `name`: its bundle (keypair + broker public key) and its public key
    in `authorized/`. Returns the bundle directory."""
    _check_name(name)
    bundle = keys_dir / CLIENTS_DIR / name
    authorized = keys_dir / AUTHORIZED_DIR / f"{name}.key"
    if (bundle.exists() or authorized.exists()) and not force:
        raise KeysError(f"client {name!r} exists already ({bundle}); --force replaces its keypair")
    _private_dir(bundle)
    _keypair(bundle, CLIENT_KEY, f"agent-mesh client {name}")
    shutil.copyfile(keys_dir / f"{BROKER_KEY}.key", bundle / f"{BROKER_KEY}.key")
    os.chmod(bundle / f"{BROKER_KEY}.key", 0o600)
    # Authorise last: the key is accepted only once its bundle is complete.
    _write_private(authorized, (bundle / f"{CLIENT_KEY}.key").read_text(encoding="utf-8"))
    return bundle


def revoke(keys_dir: Path, name: str) -> None:
    authorized = keys_dir / AUTHORIZED_DIR / f"{name}.key"
    if not authorized.exists():
        raise KeysError(f"no authorised client named {name!r} in {keys_dir / AUTHORIZED_DIR}")
    authorized.unlink()
    shutil.rmtree(keys_dir / CLIENTS_DIR / name, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
