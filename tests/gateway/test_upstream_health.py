"""The server's lifecycle as the gateway shows it (gateway/upstream_health.py): one state from
its worker processes' states, the best one, with the reason; malformed reports left out."""

from __future__ import annotations

from typing import Any, get_args

from bus.messages import UpstreamState
from bus.messages import UpstreamStateName as S
from gateway.api_shapes import UpstreamLifecycle
from gateway.upstream_health import NOBODY, overall, parse, view


def _state(
    n: int, state: S, reason: str = "", failures: int = 0, since: float = 100.0
) -> UpstreamState:
    return UpstreamState(
        server="fs", instance=f"fs:{n}", state=state, reason=reason, failures=failures, since=since
    )


def test_one_serving_process_makes_the_server_up() -> None:
    states = [_state(0, S.RESTARTING, "killed by SIGKILL"), _state(1, S.UP)]
    assert overall("fs", states, serving=True).instance == "fs:1"
    # A worker that does not report (another version) but serves: up all the same.
    assert overall("fs", [], serving=True).state is S.UP


def test_a_server_that_is_not_served_shows_its_best_process() -> None:
    def best(*states: UpstreamState) -> tuple[S, str]:
        got = overall("fs", list(states), serving=False)
        return got.state, got.reason

    assert best() == (S.STOPPED, NOBODY)
    assert best(_state(0, S.STARTING), _state(1, S.STARTING)) == (S.STARTING, "")
    assert best(_state(0, S.RESTARTING, "killed by SIGKILL"), _state(1, S.SPARE)) == (S.SPARE, "")
    missing = "command 'x' not found on PATH"
    # A failing server retrying in one process while the other waits: the wait says more.
    assert best(_state(0, S.STARTING, missing, 3), _state(1, S.BACKING_OFF, missing, 3)) == (
        S.BACKING_OFF,
        missing,
    )
    assert best(_state(0, S.FAILED, missing, 7), _state(1, S.BACKING_OFF, "other", 2)) == (
        S.BACKING_OFF,
        "other",
    )
    assert best(_state(0, S.STARTING, missing, 3)) == (S.STARTING, missing)


def test_the_health_entry_says_state_reason_since_and_each_process() -> None:
    entry = view(
        "fs", [_state(0, S.BACKING_OFF, "exited with code 2: bad config", 2, since=0.5)], False
    )
    assert entry == {
        "state": "backing_off",
        "reason": "exited with code 2: bad config",
        "since": "1970-01-01T00:00:00.500000Z",
        "instances": [
            {
                "instance": "fs:0",
                "state": "backing_off",
                "reason": "exited with code 2: bad config",
                "since": "1970-01-01T00:00:00.500000Z",
                "failures": 2,
                "pid": 0,
            }
        ],
    }


def test_malformed_reports_are_left_out() -> None:
    good = _state(1, S.UP).dump()
    workers: list[dict[str, Any]] = [
        {"meta": {"server": "fs", "state": "dancing"}},
        {"meta": None},
        {},
        {"meta": good},
    ]
    assert [s.instance for s in parse(workers)] == ["fs:1"]


def test_the_api_document_names_every_state() -> None:
    assert set(get_args(UpstreamLifecycle)) == {s.value for s in S}
