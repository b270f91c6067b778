"""The mesh's state directory: every path in it, named once (`$AGENT_MESH_HOME/<config hash>`,
else `~/.agent-mesh/<config hash>`; owner-only, since its socket files are the bus's auth).
A leaf: it imports nothing of the project. Who writes which file is said where it is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def of(cls, config_hash: str) -> StateDir:
        home = os.environ.get("AGENT_MESH_HOME")
        base = Path(home).expanduser() if home else Path.home() / ".agent-mesh"
        return cls(base / config_hash)

    # the bus (bus/endpoints.py)
    @property
    def requests_ipc(self) -> Path:
        return self.root / "bus.ipc"

    @property
    def events_in_ipc(self) -> Path:
        return self.root / "events-in.ipc"

    @property
    def events_out_ipc(self) -> Path:
        return self.root / "events.ipc"

    # supervisord (agent_mesh/launcher.py) and the connectors' leases (agent_mesh/attach.py)
    @property
    def supervisor_sock(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def embedded_start_log(self) -> Path:
        return self.logs / "embedded-start.log"

    @property
    def start_lock(self) -> Path:
        return self.root / "start.lock"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    def lease(self, pid: int) -> Path:
        return self.clients / str(pid)

    # the roles' stores
    @property
    def traces_db(self) -> Path:
        return self.root / "traces.db"

    @property
    def approvals_db(self) -> Path:
        return self.root / "state.db"

    @property
    def pins_db(self) -> Path:
        """Pinned tool definitions and their unaccepted changes (gateway/pins.py), shared by
        the front-ends (the HTTP gateway, stdio connectors)."""
        return self.root / "pins.db"

    def gateway_sock(self, slot: int) -> Path:
        """Gateway process `slot`'s own HTTP on a unix socket (with `gateway.processes` > 1):
        where the others forward a /mcp session's requests it owns (gateway/mcp_route.py)."""
        return self.root / f"gateway-{slot}.sock"

    @property
    def trace_journal(self) -> Path:
        return self.root / "trace-journal"

    @property
    def slots(self) -> Path:
        return self.root / "slots"

    @property
    def policy_set(self) -> Path:
        return self.root / "policy-set.json"

    @property
    def last_good_config(self) -> Path:
        return self.root / "last-good-config.json"


def running_pid(state: StateDir | Path) -> int | None:
    """The pid of a supervisord running this mesh (its pid file names a live process), if any."""
    root = state.root if isinstance(state, StateDir) else state
    try:
        pid = int(StateDir(root).supervisord_pid.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid
