"""Where the broker's sockets live: ipc files in the state directory, or tcp addresses secured
with CURVE (PROTOCOL.md, Security), and the CURVE keys themselves.

Key files are ZeroMQ certificates as `zmq.auth` writes and reads them (`agent-mesh keys` makes
them): `<name>.key` holds a public key, `<name>.key_secret` the keypair. A keys directory holds:

    broker.key, broker.key_secret   the broker's keypair (the secret stays on the broker host)
    authorized/<name>.key           public keys of the clients and workers the broker accepts
    clients/<name>/                 one bundle per client: client.key_secret + broker.key,
                                    what `--keys` points at on that client's host
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from bus.state_dir import StateDir

BROKER_KEY = "broker"  # broker.key / broker.key_secret
CLIENT_KEY = "client"  # client.key_secret in a client bundle
AUTHORIZED_DIR = "authorized"
CLIENTS_DIR = "clients"
ZAP_DOMAIN = b"agent-mesh"


class KeysError(ValueError):
    """A keys directory that cannot be used: names the file and what is wrong with it."""


@dataclass(frozen=True)
class Endpoints:
    requests: str  # ROUTER: clients and workers
    events_in: str | None  # XSUB: publishers connect here (None: not reachable from here)
    events_out: str | None  # XPUB: subscribers connect here

    @classmethod
    def in_dir(cls, state_dir: Path) -> Endpoints:
        """ipc endpoints in a private directory (owner-only: the socket files are the auth)."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        return cls(
            requests=f"ipc://{StateDir(state_dir).requests_ipc}",
            events_in=f"ipc://{StateDir(state_dir).events_in_ipc}",
            events_out=f"ipc://{StateDir(state_dir).events_out_ipc}",
        )

    @classmethod
    def tcp(cls, host: str, port: int) -> Endpoints:
        """A broker on another host: requests only. Its event sockets are local (ipc), so a
        process here neither subscribes nor publishes with a `Publisher`; workers publish their
        events as EVENT over the request connection (PROTOCOL.md, Events)."""
        return cls(f"tcp://{host}:{port}", None, None)


def parse_tcp(address: str) -> tuple[str, int]:
    """`tcp://host:port` (or `host:port`) → (host, port); ValueError naming what is wrong."""
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected tcp://host:port, got {address!r}")
    return host.strip("[]"), int(port)


# -- CURVE keys ---------------------------------------------------------------------------------


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: cannot read CURVE key: {exc}") from None
    if secret:
        if not secret_key:
            raise KeysError(f"{path}: no secret-key in this file")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeysError(f"{path}: secret key readable by others (mode {mode:o}); chmod 600 it")
    return public, secret_key


@dataclass(frozen=True)
class CurveServer:
    """The broker's side: its keypair and the directory of public keys it accepts."""

    public: bytes
    secret: bytes
    authorized: Path

    @classmethod
    def from_dir(cls, keys_dir: Path | str) -> CurveServer:
        keys_dir = Path(keys_dir)
        public, secret = _load(keys_dir / f"{BROKER_KEY}.key_secret", secret=True)
        authorized = keys_dir / AUTHORIZED_DIR
        if not authorized.is_dir():
            raise KeysError(f"{authorized}: no such directory (the public keys the broker accepts)")
        assert secret is not None
        return cls(public, secret, authorized)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.zap_domain = ZAP_DOMAIN


@dataclass(frozen=True)
class CurveClient:
    """A client's or worker's side: its own keypair and the broker's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_dir(cls, keys_dir: Path | str) -> CurveClient:
        """A client bundle (`client.key_secret` + `broker.key`), as `agent-mesh keys` writes it."""
        keys_dir = Path(keys_dir)
        public, secret = _load(keys_dir / f"{CLIENT_KEY}.key_secret", secret=True)
        server, _ = _load(keys_dir / f"{BROKER_KEY}.key", secret=False)
        assert secret is not None
        return cls(public, secret, server)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server


class AuthorizedKeys:
    """ZAP credentials provider: the public keys in a directory, re-read when it changes, so a
    key added (or removed) there takes effect for new connections without a broker restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[bytes, bool] = {}

    def keys(self) -> dict[bytes, bool]:
        try:
            st = self.directory.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            return {}
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._keys = zmq.auth.load_certificates(self.directory)
                except (OSError, ValueError):
                    self._keys = {}
                self._stamp = stamp
            return self._keys

    def callback(self, domain: str, key: bytes) -> bool:  # z85 public key (zmq.auth's API)
        return key in self.keys()


# Keys for connections made by this process, by endpoint: `agent-mesh run <role> --connect tcp://…
# --keys DIR` registers them once and every bus socket to that endpoint uses them (so roles need
# not thread keys through each worker's code). Explicit `curve=` arguments take precedence.
_client_keys: dict[str, CurveClient] = {}


def use_curve(endpoint: str, keys: CurveClient) -> None:
    _client_keys[endpoint] = keys


def curve_for(endpoint: str) -> CurveClient | None:
    return _client_keys.get(endpoint)
