"""A process tree read from /proc (Linux): what the benchmarks and the fault tests need to find,
watch and measure the mesh's processes (supervisord and its descendants); and what a process
that runs supervisord (`serve`, the supervisor's mesh_process) needs to stop the processes a
killed supervisord leaves behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat fields after the command name ([0] state, [1] ppid); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if stat := _stat(entry):
            children.setdefault(int(stat[1]), []).append(int(entry))
    out: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.add(child)
            stack.append(child)
    return out


def alive(pid: int) -> bool:
    """Running (a zombie is not)."""
    return _stat(pid)[:1] not in ([], ["Z"])


def cmdline(pid: int) -> str:
    """The command line, space-separated; "" if the process is gone."""
    with contextlib.suppress(OSError):
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
            .strip()
        )
    return ""


def rss_mb(pids: set[int]) -> float:
    """Resident memory of these processes together, in MiB."""
    kb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            kb += sum(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
    return kb / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far; 0.0 if it is gone."""
    stat = _stat(pid)
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") if stat else 0.0


def become_subreaper() -> None:
    """Orphans of our descendants become our children, not init's (Linux): a kill -9 of
    supervisord leaves its processes to us, to stop. Only for a process that runs a tree: a
    test process that became one would collect every orphan of the suite as a zombie."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init


def stop_descendants(grace: float = 2.0) -> int:
    """SIGTERM every process below us (an upstream worker closes its MCP server), SIGKILL what
    is left after `grace`, and reap them; how many there were."""
    first = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = descendants(os.getpid())
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap(left)
            if not any(alive(pid) for pid in left):
                break
            time.sleep(0.05)
    _reap(descendants(os.getpid()))
    return len(first)


def _reap(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
            os.waitpid(pid, os.WNOHANG)
