"""The kill switch's matching (policy/freezes.py): which freeze stops which call, and the
refusal it makes."""

from __future__ import annotations

import pytest

from policy.freezes import Freeze, stopping


def _freeze(kind: str, target: str, fid: str = "f" * 32, reason: str = "") -> Freeze:
    return Freeze.model_validate({"id": fid, "kind": kind, "target": target, "reason": reason})


@pytest.mark.parametrize(
    ("kind", "target", "agent", "tool", "stopped"),
    [
        ("agent", "claude", "claude", "fs.read_file", True),
        ("agent", "claude", "claude-2", "fs.read_file", False),  # an id is exact
        ("agent", "bot-*", "bot-7", "fs.read_file", True),
        ("agent", "bot-*", "claude", "fs.read_file", False),
        ("tool", "fs.*", "anyone", "fs.write_file", True),
        ("tool", "fs.*", "anyone", "github.list", False),
        ("tool", "fs.write_file", "anyone", "fs.read_file", False),
        ("tool", "*.delete*", "a", "github.delete_repo", True),
        ("all", "*", "a", "x.y", True),
        ("agent", "fs.*", "claude", "fs.read", False),  # an agent freeze never reads the tool
    ],
)
def test_which_calls_a_freeze_stops(
    kind: str, target: str, agent: str, tool: str, stopped: bool
) -> None:
    assert _freeze(kind, target).stops(agent, tool) is stopped


def test_the_oldest_matching_freeze_names_the_refusal() -> None:
    first = _freeze("tool", "fs.*", "1" * 32, "disk full")
    second = _freeze("agent", "claude", "2" * 32)
    assert stopping([first, second], "claude", "fs.read") is first
    assert stopping([first, second], "claude", "gh.list") is second
    assert stopping([first, second], "other", "gh.list") is None


def test_the_refusal_names_the_freeze_and_its_reason() -> None:
    decision = _freeze("agent", "claude", "ab12cd34" + "0" * 24, "leaking secrets").decision()
    assert decision.action == "deny"
    assert decision.rule == "freeze:ab12cd34" + "0" * 24
    assert decision.reason == (
        "frozen by the kill switch (agent claude, freeze ab12cd34); reason: leaking secrets"
    )
    assert _freeze("all", "*").decision().reason == (
        f"frozen by the kill switch (every call, freeze {'f' * 8})"
    )
