"""Running one governed CLI command: the argv from a call's params, the checks that refuse it
before anything runs, and the run itself. Never a shell: the binary is exec'd with an argv.

- `build_argv`: `[bin, *subcommand words, *args, *flags]`. `args` is a list of strings (numbers
  and booleans are written as JSON would), `flags` a map: `{"n": 5}` → `-n 5`, `{"namespace":
  "prod"}` → `--namespace prod`, `true` → the bare flag, `false` → left out, a list → the flag
  once per value. Every word is refused if it holds a shell metacharacter (`;` `&&` `||` `|`
  `` ` `` `$(` `${` newline, carriage return), even though no shell ever reads it. With
  `allowed_args`, every word starting with `-` (`--` too) must be one of them (`--flag=value`:
  the part before `=`); positionals always pass.
- `run`: its own process group, stdin from /dev/null, an isolated environment (PATH, HOME, LANG
  and the tool's `env`), a fixed working directory; stdout and stderr read as they come, the
  first `max_output` bytes of each kept; at `timeout` (or when the call is cancelled) the whole
  process group is killed.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
from dataclasses import dataclass, field
from subprocess import DEVNULL, PIPE
from typing import Any

METACHARACTERS = (";", "&&", "||", "|", "`", "$(", "${", "\n", "\r")
_CHUNK = 1 << 16
_DRAIN_AFTER_KILL = 1.0  # s to collect what was written before a kill


class Refused(ValueError):
    """The call's arguments are refused; nothing was run."""


def _word(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    if isinstance(value, str):
        return value
    raise Refused(f"{where}: must be a string or a number, got {type(value).__name__}")


def _flag_words(flags: Any) -> list[str]:
    if not isinstance(flags, dict):
        raise Refused('flags: must be an object of flag name → value, e.g. {"n": 5}')
    words: list[str] = []
    for name, value in flags.items():
        if not name or name.startswith("-") or "=" in name or any(c.isspace() for c in name):
            raise Refused(
                f"flags: {name!r} is not a flag name (write it without dashes, e.g. "
                '"namespace" for --namespace)'
            )
        flag = ("-" if len(name) == 1 else "--") + name
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                words.append(flag)
            elif item is not False and item is not None:
                words += [flag, _word(item, f"flags.{name}")]
    return words


def build_argv(
    bin_path: str, command: str, params: dict[str, Any], allowed_args: list[str] | None
) -> list[str]:
    """The argv for `<bin> <command words> <args> <flags>`; raises Refused."""
    unknown = sorted(set(params) - {"args", "flags"})
    if unknown:
        raise Refused(f"unknown parameter {unknown[0]!r} (a CLI tool takes 'args' and 'flags')")
    args = params.get("args", [])
    if not isinstance(args, list):
        raise Refused('args: must be a list of strings, e.g. ["-n", "5"]')
    words = [_word(a, f"args[{i}]") for i, a in enumerate(args)]
    words += _flag_words(params.get("flags", {}))
    subcommand = command.split(".") if command else []
    for word in (*subcommand, *words):
        bad = next((m for m in METACHARACTERS if m in word), None)
        if bad is not None:
            raise Refused(f"argument {word!r} holds {bad!r}, which is never passed to a command")
    if allowed_args is not None:
        for word in words:
            if word.startswith("-") and word.partition("=")[0] not in allowed_args:
                allowed = ", ".join(allowed_args) or "none"
                raise Refused(f"flag {word!r} is not allowed here (allowed: {allowed})")
    return [bin_path, *subcommand, *words]


def environment(declared: dict[str, str]) -> dict[str, str]:
    """Only PATH, HOME and LANG of ours, plus what the tool declares: no secret leaks through."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        **declared,
    }


def resolve_bin(bin_name: str, working_dir: str, path: str) -> str | None:
    """A name is looked up on PATH; a path (with '/') is taken relative to the working dir."""
    if "/" in bin_name:
        candidate = os.path.normpath(os.path.join(working_dir, os.path.expanduser(bin_name)))
        return candidate if os.access(candidate, os.X_OK) and os.path.isfile(candidate) else None
    return shutil.which(bin_name, path=path)


@dataclass
class _Capped:
    limit: int
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self.total += len(chunk)
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    truncated: dict[str, int] = field(default_factory=dict)  # stream → bytes written in all


async def run(
    argv: list[str], *, cwd: str, env: dict[str, str], timeout: float, max_output: int
) -> RunResult:
    """Run to completion or `timeout`; OSError if it cannot be started."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=DEVNULL, stdout=PIPE, stderr=PIPE, cwd=cwd, env=env, start_new_session=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capped(max_output), _Capped(max_output)
    reading: asyncio.Future[Any] = asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
    exited: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({reading, exited}, timeout=timeout)
    except BaseException:  # cancelled by the caller: nothing of it may outlive the call
        _kill_group(proc.pid)
        reading.cancel()
        raise
    timed_out = not (reading.done() and exited.done())
    if timed_out:
        _kill_group(proc.pid)
        # What it wrote before the kill; a descendant that left the group may still hold a pipe.
        await asyncio.wait({reading}, timeout=_DRAIN_AFTER_KILL)
        reading.cancel()
        await exited
    elif reading.exception() is not None:
        raise reading.exception()  # type: ignore[misc]
    truncated = {
        name: c.total for name, c in (("stdout", out), ("stderr", err)) if c.total > c.limit
    }
    assert proc.returncode is not None
    return RunResult(out.text(), err.text(), proc.returncode, timed_out, truncated)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
