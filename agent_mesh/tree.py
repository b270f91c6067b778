"""`serve` in the foreground: supervisord runs the tree as our child, and we watch it.

supervisord gives up on a program whose start keeps failing (FATAL, after `startretries`). A
mesh with a role given up on is not the mesh the user asked for: we say which role and the last
line of its log (e.g. the gateway's "port 9090 is in use"), stop the tree and exit 1. Ctrl-C and
SIGTERM are passed on to supervisord, which stops the tree; we exit with its status. A supervisord
killed outright (kill -9, the OOM killer) leaves its processes to us (we are their subreaper):
we stop them, say so and exit 1, rather than leave a headless mesh on the port. SIGHUP
reloads the policies: it goes to the gateway (gateway/reload.py), not to supervisord, whose
own SIGHUP would restart every process.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from types import FrameType
from typing import Any

from agent_mesh.proctree import become_subreaper, stop_descendants

POLL = 0.5  # s between looks at the tree
STOP_TIMEOUT = 60.0  # s supervisord gets to stop the tree


def last_line(path: str | Path) -> str:
    """The last non-empty line of a log file ("" if none)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - 8192))
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


def _supervisor(sock: Path, call: str, *args: Any) -> Any:
    """One XML-RPC call to our supervisord; None if it does not answer (not up, going down)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, serverurl=f"unix://{sock}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        return getattr(proxy.supervisor, call)(*args)
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return None
    finally:
        transport.close()


def _processes(sock: Path) -> list[dict[str, Any]]:
    return list(_supervisor(sock, "getAllProcessInfo") or [])


def reload_policies(sock: Path) -> bool:
    """SIGHUP to the gateway: it reads the config again and applies its policies."""
    # One gateway process holds the policy set: `gateway`, or `gateway-0` of several.
    done = any(
        _supervisor(sock, "signalProcess", name, "HUP") is not None
        for name in ("gateway", "gateway:gateway-0")
    )
    print(
        "agent-mesh: SIGHUP: "
        + (
            "policies reloading (see `mesh health`)"
            if done
            else "the gateway is not running; nothing reloaded"
        ),
        file=sys.stderr,
    )
    return done


def given_up(sock: Path) -> list[str]:
    """One line per program supervisord has given up on (FATAL): name and its log's last line."""
    out = []
    for info in _processes(sock):
        if info.get("statename") == "FATAL":
            log = info.get("stdout_logfile") or ""
            why = last_line(log) or info.get("spawnerr") or "no output"
            out.append(f"{info.get('name')} could not be kept running: {why} (log: {log})")
    return out


def _ended(status: int, pid: int, asked: bool) -> int:
    """Our exit status once supervisord has exited with `status`; what it left is stopped."""
    left = stop_descendants()
    if status >= 0:
        return status
    if asked:  # a stop signal reached it before its handlers (Ctrl-C as it started)
        return 0
    try:
        how = signal.Signals(-status).name
    except ValueError:
        how = f"signal {-status}"
    print(
        f"agent-mesh: supervisord (pid {pid}) was killed by {how}: "
        f"stopped the {left} processes it left",
        file=sys.stderr,
    )
    return 1


def run(conf: Path, sock: Path) -> int:
    """Run supervisord on `conf` until it exits (its status) or gives up on a program (1)."""
    # The handlers come first: a SIGTERM between the start of supervisord and their installation
    # would end us and leave the tree running, orphaned.
    stopping: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            reload_policies(sock)
            return
        stopping.append(signum)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    if stopping:  # asked to stop before anything started
        return 0
    become_subreaper()
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)])
    if stopping:  # asked while it started
        proc.send_signal(signal.SIGTERM)
    while True:
        try:
            return _ended(proc.wait(timeout=POLL), proc.pid, asked=bool(stopping))
        except subprocess.TimeoutExpired:
            pass
        failed = given_up(sock)
        if failed:
            for line in failed:
                print(f"agent-mesh: {line}", file=sys.stderr)
            print("agent-mesh: stopping the mesh", file=sys.stderr)
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
            if proc.poll() is None:
                proc.kill()
            stop_descendants()
            return 1
