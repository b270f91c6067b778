"""Glob matching and agent-pattern specificity."""

from __future__ import annotations

import pytest

from policy.globs import agent_specificity, glob_matches


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # `*` alone matches everything, dots included, and the empty name.
        ("*", "filesystem.read_file", True),
        ("*", "", True),
        ("*", "a.b.c", True),
        # prefix.*
        ("filesystem.*", "filesystem.read_file", True),
        ("filesystem.*", "filesystem.", True),
        ("filesystem.*", "filesystem", False),
        ("filesystem.*", "filesystemX.read", False),
        ("filesystem.*", "other.filesystem.read", False),
        # *.suffix crosses dots
        ("*.read", "fs.read", True),
        ("*.read", "a.b.read", True),
        ("*.read", "fs.read_file", False),
        # name_*
        ("read_*", "read_file", True),
        ("read_*", "fs.read_file", False),
        ("filesystem.read_*", "filesystem.read_multiple_files", True),
        ("filesystem.read_*", "filesystem.write_file", False),
        # exact
        ("filesystem.move_file", "filesystem.move_file", True),
        ("filesystem.move_file", "filesystem.move_files", False),
        ("filesystem.move_file", "Filesystem.move_file", False),
        # `.` is literal, not "any character"
        ("fs.read", "fsXread", False),
        ("fs.*", "fsX.read", False),
        # other regex metacharacters are literal
        ("a+b", "aab", False),
        ("a+b", "a+b", True),
        ("a?", "a?", True),
        ("a?", "ab", False),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("x[*", "x[anything", True),
        ("(x)|y", "y", False),
        ("^x$", "^x$", True),
        ("a\\b", "a\\b", True),
        # several stars
        ("*.read_*", "fs.read_file", True),
        ("*.read_*", "fs.write_file", False),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "acb", False),
        ("**", "anything.at.all", True),
        # `*` crosses newlines too
        ("a*b", "a\nb", True),
    ],
)
def test_glob_matches(pattern: str, name: str, expected: bool) -> None:
    assert glob_matches(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("claude", (0, 0)),
        ("support-bot.v2", (0, 0)),
        ("support-*", (1, -8)),
        ("*-bot", (1, -4)),
        ("a*b*", (1, -2)),
        ("*", (2, 0)),
        ("**", (2, 0)),
    ],
)
def test_agent_specificity_keys(pattern: str, expected: tuple[int, int]) -> None:
    assert agent_specificity(pattern) == expected


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["*", "support-*", "support-bot"], ["support-bot", "support-*", "*"]),
        (["s*", "*", "support-*", "claude"], ["claude", "support-*", "s*", "*"]),
        # Equal specificity keeps the given (config) order.
        (["ab-*", "*-xy", "claude", "gpt"], ["claude", "gpt", "ab-*", "*-xy"]),
        (["*-xy", "ab-*"], ["*-xy", "ab-*"]),
        (["**", "*"], ["**", "*"]),
    ],
)
def test_sorting_by_specificity(patterns: list[str], expected: list[str]) -> None:
    assert sorted(patterns, key=agent_specificity) == expected
