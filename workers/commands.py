"""Can a stdio upstream's command be started? Answered the way the worker starts it (an exec in
the server's working directory with its environment's PATH), for `agent-mesh check` before the
mesh runs and for the worker's own reason when a start fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path


def command_problem(command: str, cwd: str | None, env: Mapping[str, str]) -> str | None:
    """None if `command` can be executed, else why: `command 'x' not found on PATH`, ..."""
    if "/" in command:  # a path: relative ones are taken from the working directory
        path = Path(command) if os.path.isabs(command) else Path(cwd or os.getcwd()) / command
        if not path.exists():
            return f"command {command!r} not found" + (
                "" if os.path.isabs(command) else f" (no {path})"
            )
        if path.is_dir() or not os.access(path, os.X_OK):
            return f"command {command!r} is not executable"
        return None
    if shutil.which(command, path=env.get("PATH", os.defpath)) is None:
        return f"command {command!r} not found on PATH"
    return None


def start_failure(
    command: str | None,
    cwd: str | None,
    env: Mapping[str, str],
    exc: BaseException,
    exit_reason: str | None,
) -> str:
    """Why a stdio server did not start, in words: the exec failed (`[Errno 2]` names no command),
    or it exited (`exit_reason`: `exited with code 1: <its last stderr line>`), or what `exc`
    says."""
    if isinstance(exc, OSError) and command is not None:
        return (
            command_problem(command, cwd, env) or f"cannot start {command!r}: {exc.strerror or exc}"
        )
    lost = str(exc)  # "process N exited with 1", "stdout closed": StdioPeer's words for an exit
    exited = lost.startswith("process ") or lost.endswith(" closed")
    return (exit_reason if exited else None) or lost
