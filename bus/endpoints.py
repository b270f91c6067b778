"""Where the broker's three sockets live: ipc files in the state directory, or tcp addresses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Endpoints:
    requests: str  # ROUTER: clients and workers
    events_in: str  # XSUB: publishers connect here
    events_out: str  # XPUB: subscribers connect here

    @classmethod
    def in_dir(cls, state_dir: Path) -> Endpoints:
        """ipc endpoints in a private directory (owner-only: the socket files are the auth)."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        return cls(
            requests=f"ipc://{state_dir / 'bus.ipc'}",
            events_in=f"ipc://{state_dir / 'events-in.ipc'}",
            events_out=f"ipc://{state_dir / 'events.ipc'}",
        )

    @classmethod
    def tcp(cls, host: str, port: int) -> Endpoints:
        """Three consecutive ports starting at `port`."""
        return cls(f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}", f"tcp://{host}:{port + 2}")
