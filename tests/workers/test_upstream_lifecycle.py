"""The upstream lifecycle's state machine (workers/upstream_lifecycle.py): every edge the table
allows is taken and emitted, every other one is refused, and the back-off that decides between
`backing_off` and `failed`."""

from __future__ import annotations

import itertools

import pytest

from bus.messages import UpstreamState
from bus.messages import UpstreamStateName as S
from workers.upstream_lifecycle import TRANSITIONS, Backoff, IllegalTransition, Lifecycle


def _at(state: S) -> tuple[Lifecycle, list[UpstreamState]]:
    """A lifecycle brought to `state` by legal steps, and what it emits from then on."""
    paths = {
        S.STARTING: [],
        S.UP: [S.UP],
        S.SPARE: [S.SPARE],
        S.RESTARTING: [S.UP, S.RESTARTING],
        S.BACKING_OFF: [S.BACKING_OFF],
        S.FAILED: [S.FAILED],
        S.STOPPED: [S.STOPPED],
    }
    life = Lifecycle("fs", "fs:0")
    for step in paths[state]:
        life.transition(step)
    emitted: list[UpstreamState] = []
    life.emit = emitted.append
    return life, emitted


def test_every_state_has_its_edges_and_stopped_is_the_end() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.STOPPED] == frozenset()
    assert all(S.STOPPED in TRANSITIONS[s] for s in S if s is not S.STOPPED)
    assert TRANSITIONS[S.BACKING_OFF] == {S.STARTING, S.STOPPED}  # only by a new start


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_a_transition_is_taken_and_emitted_only_if_the_table_allows_it(old: S, new: S) -> None:
    life, emitted = _at(old)
    seq = life.seq
    if new in TRANSITIONS[old]:
        body = life.transition(new, "why", failures=2, retry_at=5.0)
        assert emitted == [body]
        assert (body.state, body.reason, body.failures, body.retry_at) == (new, "why", 2, 5.0)
        assert body.seq == seq + 1 and body.instance == "fs:0" and body.server == "fs"
        assert life.state is new
    else:
        with pytest.raises(IllegalTransition, match=f"{old} -> {new} is not a transition"):
            life.transition(new, "why")
        assert emitted == [] and life.state is old and life.seq == seq


def test_the_last_failure_count_is_kept_until_said_otherwise() -> None:
    life = Lifecycle("fs", "fs:0")
    life.transition(S.BACKING_OFF, "command 'x' not found on PATH", failures=1, retry_at=9.0)
    body = life.transition(S.STARTING, "command 'x' not found on PATH")
    assert body.failures == 1 and body.retry_at == 0.0  # no wait while it starts
    assert life.transition(S.UP, failures=0).reason == ""


def test_a_body_travels_and_comes_back_the_same() -> None:
    life = Lifecycle("fs", "fs:1")
    body = life.transition(S.SPARE, "every slot is served")
    assert UpstreamState.model_validate(body.dump()) == body
    assert body.dump()["state"] == "spare"


def test_backoff_doubles_to_30s_fails_at_the_cap_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff()
    waits, capped = [], []
    for _ in range(7):
        waits.append(backoff.after(0.1))
        capped.append(backoff.at_cap)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert capped == [False, False, False, False, False, True, True]  # backing_off, then failed
    assert backoff.failures == 7
    assert backoff.after(60) == 0 and backoff.failures == 0 and not backoff.at_cap
    assert backoff.after(0.0) == 1
