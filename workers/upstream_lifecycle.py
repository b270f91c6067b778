"""The lifecycle of one upstream worker process's upstream, as one state machine: the states
(`UpstreamStateName`, bus/messages.py), the edges allowed between them (`TRANSITIONS`), and
`Lifecycle.transition()`, the only way the state changes, which hands every change to `emit`
(workers/upstream_report.py puts it on the bus). Also when to start again (`Backoff`).

    starting ──> up / spare ──(stopped after a healthy run)──> restarting ──> up / spare
        │           │                                              │
        └───────────┴──(failed to start, or died soon after)───────┴──> backing_off / failed
                                                                             │
    starting <──────────────────(the wait is over)───────────────────────────┘

Any state may go to `stopped` (the worker stops); nothing leaves it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bus.messages import UpstreamState
from bus.messages import UpstreamStateName as S

FIRST = 1.0  # s before the start after a first failure; doubled after each further one
CAP = 30.0  # s, the longest wait between two starts
HEALTHY_RUN = 5.0  # s: an upstream that served this long did not "fail to start"

TRANSITIONS: dict[S, frozenset[S]] = {
    S.STARTING: frozenset(
        {
            S.UP,  # started, and a slot was free (or the process serves a fixed slot)
            S.SPARE,  # started, every slot served: the warm spare
            S.BACKING_OFF,  # the start failed
            S.FAILED,  # the start failed again, and the wait is at its cap
            S.STOPPED,
        }
    ),
    S.UP: frozenset(
        {
            S.RESTARTING,  # the upstream stopped after a healthy run: started again at once
            S.BACKING_OFF,  # it died soon after it started
            S.FAILED,  # ... and the wait is at its cap
            S.STOPPED,
        }
    ),
    S.SPARE: frozenset(
        {
            S.UP,  # a slot came free (its worker died): the spare serves it
            S.RESTARTING,  # the spare's upstream stopped after a healthy run
            S.BACKING_OFF,  # it died soon after it started
            S.FAILED,
            S.STOPPED,
        }
    ),
    S.RESTARTING: frozenset({S.UP, S.SPARE, S.BACKING_OFF, S.FAILED, S.STOPPED}),  # as starting
    S.BACKING_OFF: frozenset({S.STARTING, S.STOPPED}),  # the wait is over: start again
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),  # still retried, every CAP seconds
    S.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A change of state the machine does not allow: a bug in the caller, not the upstream's."""


Emit = Callable[[UpstreamState], None]


class Lifecycle:
    """One process's upstream state; it begins in `starting`."""

    def __init__(self, server: str, instance: str, emit: Emit | None = None) -> None:
        self.server, self.instance = server, instance
        self.emit = emit
        self.state = S.STARTING
        self.reason = ""
        self.since = time.time()
        self.failures = 0
        self.retry_at = 0.0
        self.seq = 0

    def transition(
        self, new: S, reason: str = "", *, failures: int | None = None, retry_at: float = 0.0
    ) -> UpstreamState:
        """Move to `new` (IllegalTransition if no edge leads there), say why, and emit it.
        `failures` (starts failed in a row) is kept unless given."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"{self.instance}: {self.state} -> {new} is not a transition "
                f"(from {self.state}: {', '.join(sorted(TRANSITIONS[self.state])) or 'none'})"
            )
        self.state, self.reason, self.since = new, reason, time.time()
        self.retry_at = retry_at
        if failures is not None:
            self.failures = failures
        self.seq += 1
        body = self.body()
        if self.emit is not None:
            self.emit(body)
        return body

    def body(self) -> UpstreamState:
        return UpstreamState(
            server=self.server,
            instance=self.instance,
            state=self.state,
            reason=self.reason,
            since=self.since,
            failures=self.failures,
            retry_at=self.retry_at,
            pid=os.getpid(),
            seq=self.seq,
        )


class Backoff:
    """How long to wait before the next start, given how the last one went."""

    def __init__(
        self, first: float = FIRST, cap: float = CAP, healthy: float = HEALTHY_RUN
    ) -> None:
        self.first, self.cap, self.healthy = first, cap, healthy
        self.failures = 0  # in a row

    def after(self, ran_for: float) -> float:
        """The wait before the next start, after an upstream that served `ran_for` seconds
        (0 when it failed to start)."""
        if ran_for >= self.healthy:
            self.failures = 0
            return 0.0
        self.failures += 1
        return float(min(self.cap, self.first * 2.0 ** (self.failures - 1)))

    @property
    def at_cap(self) -> bool:
        """The waits stopped growing: the upstream keeps failing (`failed`, not `backing_off`)."""
        return self.failures > 0 and self.first * 2.0 ** (self.failures - 1) >= self.cap
