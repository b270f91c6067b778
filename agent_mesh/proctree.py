"""A process tree read from /proc (Linux): what the benchmarks and the fault tests need to find,
watch and measure the mesh's processes (supervisord and its descendants)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
