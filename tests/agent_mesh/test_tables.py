"""Tables that fit the terminal: short times, tool names whole, params cut (or dropped) first."""

from __future__ import annotations

import time

from agent_mesh.mesh_client import TRACES, trace_rows
from agent_mesh.tables import clock, render

TRACE = {
    "timestamp": "2026-12-02T23:41:07.123456Z",
    "agent_id": "claude-code-session",
    "tool": "filesystem.list_allowed_directories",
    "policy": "human_approval",
    "status_code": 200,
    "latency_ms": 12.345,
    "params": {"path": "/tmp/mesh-demo/a/rather/long/path", "depth": 3},
    "error": "",
}


def test_times_are_short_local_clock_times() -> None:
    local = time.strftime("%H:%M:%S", time.localtime(1_764_000_000))
    assert clock(1_764_000_000.25) == local
    assert clock("2025-11-24T16:00:00Z") == local  # the same instant, as traces write it
    assert clock(None) == "" and clock("yesterday") == "yesterday"


def test_traces_fit_80_columns_with_tool_names_whole() -> None:
    rows = trace_rows([TRACE, {**TRACE, "tool": "fs.read", "agent_id": "a", "params": {}}])
    lines = render(TRACES, rows, 80).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:3] == ["TIME", "AGENT", "TOOL"]
    assert "filesystem.list_allowed_directories" in lines[1]
    assert lines[1].split()[0] == clock(TRACE["timestamp"])


def test_params_are_cut_first_and_shown_when_there_is_room() -> None:
    rows = trace_rows([TRACE])
    wide = render(TRACES, rows, 200).splitlines()
    assert '{"path":"/tmp/mesh-demo/a/rather/long/path","depth":3}' in wide[1]
    medium = render(TRACES, rows, 120).splitlines()
    assert all(len(line) <= 120 for line in medium)
    assert '{"path":"/tmp/mesh-demo' in medium[1] and medium[1].endswith("…")
    assert "claude-code-session" in medium[1]  # only params gave up width


def test_errors_show_instead_of_params() -> None:
    rows = trace_rows([{**TRACE, "status_code": 403, "error": "denied by policy claude: write"}])
    assert "denied by policy claude: write" in render(TRACES, rows, 160)


def test_a_table_too_narrow_for_whole_tool_names_stays_whole() -> None:
    line = render(TRACES, trace_rows([TRACE]), 30).splitlines()[1]
    assert "filesystem.list_allowed_directories" in line
