"""The supervisor's condition language: every operator, and/or/not/parentheses, lists, paths
normalised before comparing (traversal cannot escape a starts_with), precise parse errors."""

from __future__ import annotations

from typing import Any

import pytest

from autoresolve.conditions import ConditionError, normalise_path, parse

CALL: dict[str, Any] = {
    "tool": "fs.write_file",
    "server": "fs",
    "agent": "claude",
    "policy_rule": "claude:rule-2",
    "injection_risk": False,
    "params": {
        "path": "/home/user/project/main.py",
        "size": 120,
        "ratio": 0.5,
        "flag": True,
        "name": "report-2024.txt",
        "text_size": "120",
        "paths": ["/home/user/a", "/home/user/b"],
        "tags": ["urgent", "draft"],
        "empty": [],
        "opts": {"mode": "overwrite", "target_dir": "/srv/data/../data/x"},
        "command": "ls //etc",
    },
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # starts_with / ends_with / contains / matches
        ("params.path starts_with /home/user", True),
        ("params.path starts_with /home/user/", True),
        ("params.path starts_with /home/usr", False),
        ("params.name starts_with report", True),
        ("params.name ends_with .txt", True),
        ("params.name ends_with .py", False),
        ("params.name contains 2024", True),
        ("params.name contains 2025", False),
        (r'params.name matches "^report-\d{4}\.txt$"', True),
        (r'params.name matches "^\d"', False),
        ("params.name matches report", True),  # a search, not a full match
        # == and != by type
        ("tool == fs.write_file", True),
        ("tool != fs.write_file", False),
        ("tool != fs.read_file", True),
        ("params.size == 120", True),
        ("params.size == 120.0", True),
        ("params.flag == true", True),
        ("params.flag != false", True),
        ('params.name == "report-2024.txt"', True),
        # the agent's numeric strings are never numbers, and type mismatches are false, != too
        ("params.text_size == 120", False),
        ("params.text_size != 120", False),
        ("params.text_size > 100", False),
        ("params.flag == 1", False),
        # ordering: numbers only
        ("params.size < 121", True),
        ("params.size < 120", False),
        ("params.size <= 120", True),
        ("params.size > 119", True),
        ("params.size >= 121", False),
        ("params.ratio < 1", True),
        ("params.flag > 0", False),
        # in
        ("tool in [fs.write_file, fs.edit_file]", True),
        ("tool in [fs.read_file]", False),
        ("params.size in [1, 120]", True),
        ('agent in ["claude", other]', True),
        # missing fields fail every comparison; not (...) around them holds
        ("params.nope == x", False),
        ("params.nope != x", False),
        ("not (params.nope == x)", True),
        ("params.path.deeper == x", False),
        # nested params
        ("params.opts.mode == overwrite", True),
        # lists: every element must hold (and not be empty); contains is membership
        ("params.paths starts_with /home/user", True),
        ("params.paths starts_with /home/user/a", False),
        ("params.empty starts_with /", False),
        ("params.tags contains urgent", True),
        ("params.tags contains urg", False),
        # truth of a field alone, other fields
        ("injection_risk", False),
        ("not injection_risk", True),
        ("params.flag", True),
        ("params.name", False),  # only `true` is true
        ("server == fs", True),
        ("agent_id == claude", True),
        ("policy_rule starts_with claude:", True),
        # and / or / not / parentheses and precedence
        ("tool == fs.write_file and params.size < 100", False),
        ("tool == fs.write_file or params.size < 100", True),
        ("not tool == fs.write_file", False),
        ("tool == x or tool == y or tool == fs.write_file", True),
        ("tool == x and tool == y or tool == fs.write_file", True),  # and binds tighter
        ("tool == x and (tool == y or tool == fs.write_file)", False),
        ("not not (params.size == 120)", True),
        ("((params.size == 120))", True),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    assert parse(condition).holds(CALL) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/user", True),
        ("/home/user/", True),
        ("/home/user/project/x.py", True),
        ("/home/user/./project", True),
        ("/home/user/project/../other", True),  # still inside
        ("/home/user/../etc/passwd", False),
        ("/home/user/../../etc", False),
        ("/home/user/project/../../../etc", False),
        ("/home/user/..", False),
        ("/home/username", False),  # a sibling with the same prefix is not inside
        ("/home/user2/x", False),
        ("//home/user/x", True),
        ("///etc/../home/user/x", True),
        ("/etc", False),
        ("home/user/x", False),  # relative: not under an absolute directory
        ("../home/user", False),
        ("", False),
    ],
)
def test_path_traversal_cannot_escape_starts_with(path: str, expected: bool) -> None:
    assert parse("params.path starts_with /home/user").holds({"params": {"path": path}}) is expected


@pytest.mark.parametrize(
    ("condition", "params", "expected"),
    [
        # path-named params are normalised for every operator
        ("params.path == /etc/passwd", {"path": "/tmp/../etc/passwd"}, True),
        ("params.path != /etc/passwd", {"path": "/tmp/../etc/passwd"}, False),
        ("params.path in [/etc/passwd, /etc/shadow]", {"path": "/var/../etc//shadow"}, True),
        ("params.path contains /etc/", {"path": "/home/x/../../etc/passwd"}, True),
        ('params.path matches "^/home/user/"', {"path": "/home/user/../../etc/passwd"}, False),
        ("params.source_path starts_with /srv", {"source_path": "/srv/../root"}, False),
        ("params.target_dir starts_with /srv/data", {"target_dir": "/srv/data/../data/x"}, True),
        ("params.destination starts_with /tmp", {"destination": "/tmp/../etc"}, False),
        # any param compared to an absolute path is path-valued
        ("params.where starts_with /tmp", {"where": "/tmp/../etc"}, False),
        ("params.where == /tmp/a", {"where": "/tmp//a/"}, True),
        # ...but contains / matches on other params look at the text as sent
        ("params.command contains //etc", {"command": "ls //etc"}, True),
        # the root directory contains every absolute path, no relative one
        ("params.path starts_with /", {"path": "/anything/../at/all"}, True),
        ("params.path starts_with /", {"path": "relative"}, False),
    ],
)
def test_path_valued_comparisons(condition: str, params: dict[str, Any], expected: bool) -> None:
    assert parse(condition).holds({"params": params}) is expected


def test_normalise_path() -> None:
    assert normalise_path("/home/user/../../etc//x/") == "/etc/x"
    assert normalise_path("//x") == "/x"
    assert normalise_path("a/./b/../c") == "a/c"


@pytest.mark.parametrize(
    ("condition", "column", "problem"),
    [
        ("", 1, "empty condition"),
        ("   ", 1, "empty condition"),
        ("params.path startswith /home", 13, "did you mean 'starts_with'?"),
        ("parms.path starts_with /home", 1, "unknown field 'parms.path'"),
        ("params. == x", 1, "unknown field 'params.'"),
        ("toll == x", 1, "did you mean 'tool'?"),
        (
            "params.path starts_with",
            24,
            "expected a value after 'starts_with', got the end of the condition",
        ),
        ("params.path starts_with (", 25, "quote values containing"),
        ("(tool == x", 11, "expected ')' to close the '(' at column 1"),
        ("tool == x)", 10, "unexpected ')'"),
        ("tool == x tool == y", 11, "expected 'and', 'or' or the end"),
        ("tool == x and", 14, "expected a field"),
        ("tool == x or or tool == y", 14, "expected a field"),
        ("params.size < big", 15, "'<' compares numbers"),
        ("params.size >= true", 16, "'>=' compares numbers"),
        ('params.name matches "(unclosed"', 21, "invalid regular expression"),
        ("tool in fs.a", 9, "'in' needs a list"),
        ("tool in []", 10, "empty list"),
        ("tool in [a b]", 12, "expected ',' or ']'"),
        ("tool in [a,", 12, "expected a value"),
        ('params.name == "open', 16, "unterminated string"),
        ("tool = x", 6, "unknown operator '='"),
        ("tool ! x", 6, "unknown operator '!'"),
        ("and == x", 1, "expected a field"),
    ],
)
def test_parse_errors_name_column_and_problem(condition: str, column: int, problem: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse(condition)
    assert caught.value.column == column
    assert problem in str(caught.value)


def test_quoted_values() -> None:
    assert parse('params.name == "a b (c)"').holds({"params": {"name": "a b (c)"}})
    assert parse(r'params.name == "say \"hi\""').holds({"params": {"name": 'say "hi"'}})
    assert parse("params.name == '42'").holds({"params": {"name": "42"}})  # quoted: a string
    assert not parse("params.name == '42'").holds({"params": {"name": 42}})
    assert parse(r'params.name matches "\.py$"').holds({"params": {"name": "a.py"}})


def test_evaluation_never_raises_on_odd_params() -> None:
    condition = parse("params.path starts_with /a or params.n > 1 or params.x matches y")
    for params in (
        {"path": None},
        {"path": 3},
        {"path": {"x": 1}},
        {"n": "2"},
        {"n": float("nan")},
        {"x": ["y", 1]},
        {"path": [None]},
    ):
        assert condition.holds({"params": params}) is False
    assert condition.holds({}) is False
