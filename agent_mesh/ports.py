"""Can the gateway listen where the config says? Checked before a tree is started (`serve`,
`--mcp`) and by the gateway itself, so that a taken port is one clear line, not a crash loop.

Who holds a port is read from /proc (Linux): the listening socket's inode in /proc/net/tcp*,
then the process with that inode among its fds (only our own processes can be seen into).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
from pathlib import Path

from agent_mesh.proctree import cmdline

_LISTEN = "0A"  # TCP state in /proc/net/tcp


def raise_fd_limit() -> int:
    """The soft limit on open files raised to the hard one (a connection is a file: 1,024, a
    common soft default, would cap the gateway below a thousand agents); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bind(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A listening TCP socket as uvicorn makes it (SO_REUSEADDR); raises OSError. `shared`:
    SO_REUSEPORT too, so that the mesh's other gateway processes listen on the same port (the
    kernel spreads connections over them); a process without it still cannot take the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def problem(host: str, port: int, fix: str) -> str | None:
    """None when `host:port` can be listened on now, else one line saying why and what to do
    (`fix`: how this port was chosen, e.g. "set port: in mesh.yaml or --port")."""
    try:
        bind(host, port).close()
    except OSError as exc:
        return explain(exc, host, port, fix)
    return None


def explain(exc: OSError, host: str, port: int, fix: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use{holder(port)}; {fix}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}:{port}: {host} is not an address of this machine; "
            "set host: in the config"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {host}:{port}: permission denied "
            f"(ports below 1024 need privileges); {fix}"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}:{port}: unknown host {host!r}; set host: in the config"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; {fix}"


def holder(port: int) -> str:
    """` (by pid N: command)` for the process listening on `port`, or "" if it cannot be seen."""
    pid = listener(port)
    if pid is None:
        return ""
    command = cmdline(pid)
    return f" (by pid {pid}: {command[:80]})" if command else f" (by pid {pid})"


def listener(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (
                    len(fields) > 9
                    and fields[3] == _LISTEN
                    and int(fields[1].rsplit(":", 1)[1], 16) == port
                ):
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None
