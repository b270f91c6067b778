"""Slot claims of upstream worker processes (workers/upstream_slots.py): real flock(2) locks,
a real process killed -9 while it holds one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import wait_until
from workers.upstream_slots import POLL, SlotClaim, candidates


@pytest.mark.parametrize(
    ("slot", "workers", "expected"),
    [
        (0, 1, [0]),  # the one worker
        (1, 1, [0]),  # its warm spare
        (1, 3, [1, 0, 2]),  # its own slot first
        (3, 3, [0, 1, 2]),  # the spare of three
        (5, 0, [5]),  # run by hand (workers: 0): only the slot it was given
    ],
)
def test_candidates(slot: int, workers: int, expected: list[int]) -> None:
    assert candidates(slot, workers) == expected


def test_each_slot_has_one_holder_and_the_spare_waits(tmp_path: Path) -> None:
    a, b, spare = (SlotClaim(tmp_path, "fs", candidates(n, 2)) for n in (0, 1, 2))
    assert (a.try_claim(), b.try_claim(), spare.try_claim()) == (0, 1, None)

    async def takeover() -> float:
        waiting = asyncio.create_task(spare.claim())
        deadline = time.monotonic() + 5
        while not list(tmp_path.glob("*.spare.*")):  # it has said it is the spare
            assert time.monotonic() < deadline, "no spare file"
            await asyncio.sleep(0.001)
        assert not waiting.done()
        assert [p.name for p in tmp_path.glob("*.spare.*")] == [f"upstream-fs.spare.{os.getpid()}"]
        released = time.monotonic()
        b.release()
        assert await waiting == 1
        return time.monotonic() - released

    assert asyncio.run(takeover()) < POLL + 0.5  # one poll, and a busy machine's slack
    assert not list(tmp_path.glob("*.spare.*")), "no longer the spare"
    b2 = SlotClaim(tmp_path, "fs", candidates(1, 2))
    assert b2.try_claim() is None, "slot 1 is the spare's now"


def test_a_killed_holders_slot_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from workers.upstream_slots import SlotClaim
assert SlotClaim(Path({str(tmp_path)!r}), "fs", [0]).try_claim() == 0
print("held", flush=True)
time.sleep(60)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        spare = SlotClaim(tmp_path, "fs", [0])
        assert spare.try_claim() is None
        os.kill(holder.pid, signal.SIGKILL)
        wait_until(lambda: spare.try_claim() == 0, 1, "the dead holder's slot")
    finally:
        holder.kill()
        holder.wait()
