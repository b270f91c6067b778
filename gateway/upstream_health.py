"""Each upstream's lifecycle as the front-ends show it: the states its worker processes report
(`UpstreamState`, the metadata of their `upstream-state.<server>` registrations, see
workers/upstream_report.py) read from the broker's `mmi.services` report, and one state for the
server: that of its best process (`up` if any serves). /health, /ready, /mcp-servers and the 503
of a call to a server that is down say it, with the reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from bus.messages import UpstreamState
from bus.messages import UpstreamStateName as S
from policy.approval_view import rfc3339

# The server's state is its best process's: one serving makes it up; an upstream that runs is
# better news than a restart, a restart than a start, a start than a wait, a wait than a failure.
# A start that retries a failing one ranks last: the wait around it says more.
RANK = (S.UP, S.SPARE, S.RESTARTING, S.STARTING, S.BACKING_OFF, S.FAILED, S.STOPPED)
NOBODY = "no worker of it on the bus"


def parse(workers: list[dict[str, Any]]) -> list[UpstreamState]:
    """The states in the workers of an `upstream-state.<server>` entry of `mmi.services`
    (receivers validate: a malformed one is left out)."""
    states = []
    for worker in workers:
        try:
            states.append(UpstreamState.model_validate(worker.get("meta") or {}))
        except ValidationError:
            continue
    return sorted(states, key=lambda s: s.instance)


def overall(server: str, states: list[UpstreamState], serving: bool) -> UpstreamState:
    """The server's state. `serving`: a worker of `upstream.<server>` is on the bus (then it is
    up whatever the reports say, e.g. a worker of a version that does not report)."""
    if serving:
        up = [s for s in states if s.state == S.UP]
        return (
            min(up, key=lambda s: s.since)
            if up
            else UpstreamState(server=server, instance="", state=S.UP)
        )
    if not states:
        return UpstreamState(server=server, instance="", state=S.STOPPED, reason=NOBODY)
    return min(states, key=lambda s: (_rank(s), -s.since))


def _rank(state: UpstreamState) -> int:
    return len(RANK) if state.state == S.STARTING and state.failures else RANK.index(state.state)


def view(server: str, states: list[UpstreamState], serving: bool) -> dict[str, Any]:
    """The /health entry of a server: `state`, `reason`, `since`, and each process's state."""
    best = overall(server, states, serving)
    return {
        "state": best.state.value,
        **({"reason": best.reason} if best.reason else {}),
        **({"since": rfc3339(best.since)} if best.since else {}),
        "instances": [_instance(s) for s in states],
    }


def _instance(state: UpstreamState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "instance": state.instance,
        "state": state.state.value,
        "since": rfc3339(state.since),
        "pid": state.pid,
    }
    if state.reason:
        out["reason"] = state.reason
    if state.failures:
        out["failures"] = state.failures
    if state.retry_at:
        out["retry_at"] = rfc3339(state.retry_at)
    return out
