"""The gateway raises its soft limit on open files to the hard one before it listens: one
connection per agent, so a 1,024 soft default would refuse the thousandth agent."""

from __future__ import annotations

import resource
import subprocess
import sys

OPEN_MANY = """
import socket
from agent_mesh import ports
print(ports.raise_fd_limit())
socks = [socket.socket() for _ in range(300)]  # more than the soft limit it started with
print(len(socks))
"""


def _lower_soft_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))


def test_soft_limit_raised_to_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run(
        [sys.executable, "-c", OPEN_MANY],
        preexec_fn=_lower_soft_limit,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == [str(hard), "300"]


def test_without_raising_the_soft_limit_holds() -> None:
    """The case above is real: with the lowered limit and no raise, the sockets are refused."""
    result = subprocess.run(
        [sys.executable, "-c", OPEN_MANY.replace("ports.raise_fd_limit()", "0")],
        preexec_fn=_lower_soft_limit,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Too many open files" in result.stderr
