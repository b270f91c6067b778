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


ERROR = (
    "upstream filesystem: Access denied - path outside allowed directories: /etc/passwd not in "
    "/tmp/mesh-demo"
)


def test_an_error_too_long_for_its_cell_is_wrapped_whole_below_its_row() -> None:
    ok = {**TRACE, "agent_id": "claude", "tool": "filesystem.write_file", "policy": "allow"}
    failed = {**ok, "status_code": 502, "error": ERROR}
    lines = render(TRACES, trace_rows([failed, ok]), 80).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[1].startswith(clock(TRACE["timestamp"])) and lines[1].endswith("502  12")
    below = lines[2:4]
    assert all(line.startswith(" " * 10) and line[10] != " " for line in below), below
    assert " ".join(line.strip() for line in below) == ERROR
    assert lines[4].startswith(clock(TRACE["timestamp"])) and lines[4].endswith("…")  # params cut
    assert len(lines) == 5


def test_an_error_that_fits_stays_in_its_row() -> None:
    failed = {**TRACE, "status_code": 502, "error": ERROR}
    lines = render(TRACES, trace_rows([failed]), 200).splitlines()
    assert len(lines) == 2 and lines[1].endswith(ERROR)


def test_an_error_is_shown_when_the_terminal_has_no_room_for_its_column() -> None:
    failed = {**TRACE, "status_code": 403, "error": "denied by policy claude: rule 2: deny"}
    lines = render(TRACES, trace_rows([failed]), 30).splitlines()
    assert "PARAMS" not in lines[0]
    assert " ".join(line.strip() for line in lines[2:]) == failed["error"]
