"""Which upstream worker process of this host serves which slot of a server: one lock file per
slot (`<state>/slots/upstream-<server>-<n>.lock`), held with flock(2) while the process serves.

supervisord runs one process more than the server's `workers`: the warm spare. Every process
starts its MCP server first and then claims a slot; the one left over polls the locks, its
upstream already initialised. When a serving process dies the kernel releases its lock at once,
so the spare takes the slot within one poll and says READY: the slot is served again in tens of
milliseconds instead of a Python start, an MCP server start and a handshake (about a second).
supervisord's restart of the dead process becomes the next spare. A warm spare shows as
`upstream-<server>.spare.<pid>` in the same directory while it waits.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

POLL = 0.02  # s between a spare's tries


def candidates(slot: int, workers: int) -> list[int]:
    """The slots a process may serve, its own first. A server run only by hand (`workers: 0`,
    e.g. on another host) has no spare: each process serves the slot it was given."""
    if workers <= 0:
        return [slot]
    others = [n for n in range(workers) if n != slot]
    return [slot, *others] if slot < workers else others


class SlotClaim:
    def __init__(self, directory: Path, server: str, slots: list[int]) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.slots = slots
        self._paths = {n: directory / f"upstream-{server}-{n}.lock" for n in slots}
        self._spare = directory / f"upstream-{server}.spare.{os.getpid()}"
        self._fd: int | None = None
        self.slot: int | None = None  # the one held

    def try_claim(self) -> int | None:
        """Take the first free slot now (its lock), if any."""
        assert self._fd is None, "already holds a slot"
        for n in self.slots:
            fd = os.open(self._paths[n], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd, self.slot = fd, n
            return n
        return None

    async def claim(self) -> int:
        """Wait (as the warm spare) until a slot is free, and take it."""
        self._spare.touch()
        try:
            while (n := self.try_claim()) is None:
                await asyncio.sleep(POLL)
        finally:
            self._spare.unlink(missing_ok=True)
        return n

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = self.slot = None
