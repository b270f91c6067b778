"""`mesh health` (agent_mesh/mesh_health.py) with each upstream's lifecycle: its state, since when
and why, in one line; an upstream that is up but has a worker restarting says so; healthy only
when every upstream is up."""

from __future__ import annotations

from typing import Any

from agent_mesh.mesh_health import health_view, healthy

MISSING = "command 'does-not-exist' not found on PATH"


def _body(**states: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "services": {"policy": {"workers": 1}},
        "upstreams": {name: "up" if s["state"] == "up" else "down" for name, s in states.items()},
        "upstream_states": states,
    }


def test_each_upstream_in_one_line_with_its_state_and_reason() -> None:
    body = _body(
        fs={
            "state": "up",
            "since": "2026-12-02T04:10:00Z",
            "instances": [
                {"instance": "fs:0", "state": "up"},
                {"instance": "fs:1", "state": "restarting", "reason": "killed by SIGKILL"},
            ],
        },
        missing={
            "state": "backing_off",
            "reason": MISSING,
            "since": "2026-12-02T04:11:00Z",
            "instances": [{"instance": "missing:0", "state": "backing_off", "reason": MISSING}],
        },
    )
    lines = {line.split()[0]: line.split() for line in health_view(body, 200).splitlines()}
    assert lines["NAME"] == ["NAME", "KIND", "STATUS", "WORKERS", "SINCE", "REASON"]
    assert lines["fs"][:4] == ["fs", "upstream", "up", "1"]
    assert " ".join(lines["fs"][5:]) == "fs:1 restarting: killed by SIGKILL"
    assert lines["missing"][2] == "backing_off" and " ".join(lines["missing"][4:]) == MISSING
    assert not healthy(body)
    # A narrow terminal drops the time before it cuts the reason.
    narrow = health_view(body, 80)
    assert "SINCE" not in narrow and MISSING[:30] in narrow


def test_healthy_when_every_upstream_is_up() -> None:
    up = {"state": "up", "instances": [{"instance": "fs:0", "state": "up"}]}
    assert healthy(_body(fs=up))
    assert not healthy(_body(fs={**up, "state": "restarting"}))


def test_a_held_tool_change_is_a_line_and_mesh_tools_notes_it() -> None:
    from agent_mesh.mesh_cli import tool_note

    line = "fs.read_file changed since pinned (calls refused until ...): description: ..."
    body = {**_body(fs={"state": "up", "instances": []}), "tool_changes": [{"line": line}]}
    assert line in health_view(body, 120).splitlines()
    assert tool_note({"pin": {"status": "changed", "mode": "block"}}) == "changed (block)"
    assert tool_note({"pin": {"status": "pinned"}, "injection_phrases": ["you are now"]}) == (
        "flagged: you are now"
    )
    assert tool_note({"name": "git.status"}) == ""


def test_freezes_in_force_are_a_line_and_none_is_no_line() -> None:
    body = _body(fs={"state": "up", "instances": []})
    assert "freezes" not in health_view({**body, "freezes": {"count": 0, "all": False}}, 120)
    lines = health_view({**body, "freezes": {"count": 2, "all": False}}, 120).splitlines()
    assert "freezes: 2 in force (`mesh freezes`)" in lines
    lines = health_view({**body, "freezes": {"count": 1, "all": True}}, 120).splitlines()
    assert (
        "freezes: 1 in force; everything is frozen (`mesh freeze --all`) (`mesh freezes`)" in lines
    )
