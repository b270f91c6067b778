"""workers/cli_runner.py: the argv a call becomes, what is refused before anything runs, and
running real binaries (timeouts, output caps, the environment)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from workers import cli_runner
from workers.cli_runner import Refused, build_argv

ALLOWED = ["-n", "--oneline", "--format"]


@pytest.mark.parametrize(
    ("params", "argv"),
    [
        ({}, ["git", "log"]),
        ({"args": ["-n", "5", "HEAD"]}, ["git", "log", "-n", "5", "HEAD"]),
        ({"args": [3, 1.5, True]}, ["git", "log", "3", "1.5", "true"]),
        ({"flags": {"n": 5}}, ["git", "log", "-n", "5"]),
        ({"flags": {"format": "%h"}}, ["git", "log", "--format", "%h"]),
        ({"flags": {"oneline": True, "n": False}}, ["git", "log", "--oneline"]),
        ({"args": ["HEAD"], "flags": {"n": [1, 2]}}, ["git", "log", "HEAD", "-n", "1", "-n", "2"]),
        (
            {"args": ["--format=%h"]},
            ["git", "log", "--format=%h"],
        ),  # --flag=value: the flag is checked
        (
            {"args": ["a b", "quoted 'x'", "*.py", "~", "<in", ">out"]},  # no shell: plain words
            ["git", "log", "a b", "quoted 'x'", "*.py", "~", "<in", ">out"],
        ),
    ],
)
def test_argv(params: dict[str, object], argv: list[str]) -> None:
    assert build_argv("git", "log", params, ALLOWED) == argv


def test_subcommand_words_and_no_allowlist() -> None:
    assert build_argv("gh", "pr.list", {"args": ["--state", "open"]}, None) == [
        "gh",
        "pr",
        "list",
        "--state",
        "open",
    ]
    assert (
        build_argv("gh", "pr.list", {"args": ["-rf"]}, None)[-1] == "-rf"
    )  # no allowlist: any flag


INJECTIONS = [
    *[("args", [f"x{m}y"]) for m in cli_runner.METACHARACTERS],
    ("args", ["; rm -rf /"]),
    ("args", ["a && b"]),
    ("args", ["a || b"]),
    ("args", ["a | b"]),
    ("args", ["`id`"]),
    ("args", ["$(id)"]),
    ("args", ["${HOME}"]),
    ("args", ["a\nb"]),
    ("args", ["a\rb"]),
    ("flags", {"n": "1; id"}),
    ("flags", {"format": "$(id)"}),
    ("args", ["--exec=evil"]),
    ("args", ["--upload-pack", "x"]),
    ("args", ["-c", "x"]),
    ("args", ["--", "-rf"]),
    ("args", ["-n", "1", "--", "-rf"]),
    ("flags", {"exec": "x"}),
    ("flags", {"c": "core.pager=less"}),
    ("flags", {"n": "-rf"}),  # a value that would read as a flag is one
    ("flags", {"--n": 1}),
    ("flags", {"n=1": 1}),
    ("flags", {"a b": 1}),
    ("args", "HEAD"),
    ("args", [["nested"]]),
    ("args", [{"x": 1}]),
    ("flags", ["n"]),
    ("command", "log"),
    ("env", {"PATH": "/tmp"}),
]


@pytest.mark.parametrize(("key", "value"), INJECTIONS)
def test_refused_before_anything_runs(key: str, value: object, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(Refused):
        build_argv(
            "touch",
            "log",
            {key: value, "args": [str(marker)]} if key != "args" else {key: value},
            ALLOWED,
        )
    assert not marker.exists()


def test_metacharacters_in_the_subcommand_are_refused() -> None:
    with pytest.raises(Refused, match="never passed"):
        build_argv("git", "lo;g", {}, None)


async def _run(
    argv: list[str],
    timeout: float = 10,
    max_output: int = 1 << 20,
    cwd: str = "/",
    env: dict[str, str] | None = None,
) -> cli_runner.RunResult:
    return await cli_runner.run(
        argv, cwd=cwd, env=env or cli_runner.environment({}), timeout=timeout, max_output=max_output
    )


async def test_a_real_binary_and_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    ok = await _run(["ls", "-1"], cwd=str(tmp_path))
    assert (ok.stdout, ok.stderr, ok.exit_code, ok.timed_out) == ("a.txt\n", "", 0, False)
    missing = await _run(["ls", "nope"], cwd=str(tmp_path))
    assert missing.exit_code == 2 and "nope" in missing.stderr and missing.stdout == ""


async def test_the_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    # sh starts a grandchild (sleep 60) and waits for it: both must die at the timeout.
    result = await _run(
        ["sh", "-c", f"echo early; sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5
    )
    assert time.monotonic() - started < 3
    assert result.timed_out and result.exit_code == -9 and result.stdout == "early\n"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2]
        if Path(f"/proc/{pid}/stat").exists()
        else "X"
    )
    return status != "Z"


async def test_output_is_capped_and_said_so() -> None:
    five_mib = f"import sys; sys.stdout.write('x' * {5 << 20}); sys.stderr.write('e' * 10)"
    result = await _run([sys.executable, "-c", five_mib])
    assert result.exit_code == 0 and not result.timed_out
    assert len(result.stdout) == 1 << 20 and result.truncated == {"stdout": 5 << 20}
    assert result.stderr == "e" * 10
    small = await _run([sys.executable, "-c", five_mib], max_output=4096)
    assert len(small.stdout) == 4096 and small.truncated == {"stdout": 5 << 20}


async def test_the_environment_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    env = cli_runner.environment({"TF_IN_AUTOMATION": "1"})
    assert set(env) == {"PATH", "HOME", "LANG", "TF_IN_AUTOMATION"}
    result = await _run(["env"], env=env)
    names = {line.partition("=")[0] for line in result.stdout.splitlines()}
    assert "SECRET_TOKEN" not in names and {"PATH", "HOME", "TF_IN_AUTOMATION"} <= names


def test_resolve_bin(tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    assert cli_runner.resolve_bin("./tool.sh", str(tmp_path), "") == str(tmp_path / "tool.sh")
    assert cli_runner.resolve_bin("ls", str(tmp_path), os.environ["PATH"]) is not None
    assert cli_runner.resolve_bin("no-such-binary-here", str(tmp_path), os.environ["PATH"]) is None


async def test_a_cancelled_call_kills_the_process_group(tmp_path: Path) -> None:
    # An MCP client's notifications/cancelled cancels the worker's task: nothing may outlive it.
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(
        _run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=30)
    )
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    grandchild = int(pidfile.read_text())
    while _alive(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _alive(grandchild)
