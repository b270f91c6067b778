"""Conditions v2: all / any / not, the new operators, `within` against traversal, and the
load-time errors that name the bad part."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from policy.conditions import condition_holds, describe
from policy.engine import PolicyEngine
from policy.model import Condition, Policy
from policy.paths import normalise, within

CALL: dict[str, Any] = {
    "agent": "claude",
    "tool": "fs.read_file",
    "params": {
        "path": "/home/me/project/src/a.py",
        "paths": ["/home/me/project/a", "/home/me/project/b/../c"],
        "mixed": ["/home/me/project/a", "/etc/passwd"],
        "empty": [],
        "branch": "feature/x",
        "n": 3,
        "flag": True,
        "tags": ["a", "b", 7],
        "text": "hello world",
        "nums": [1, 2],
        "obj": {"k": "v"},
    },
}


def cond(data: dict[str, Any]) -> Condition:
    return Condition.model_validate(data)


def c(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "operator": op, "value": value}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # in / not_in: scalars, equality as ==
        (c("params.branch", "in", ["main", "feature/x"]), True),
        (c("params.branch", "in", ["main"]), False),
        (c("params.branch", "not_in", ["main"]), True),
        (c("params.branch", "not_in", ["feature/x"]), False),
        (c("params.n", "in", [1, 3.0]), True),
        (c("params.n", "in", ["3"]), True),  # a numeric string in the config is a number (as ==)
        (c("params.flag", "in", [1]), False),  # bool is not a number
        (c("params.flag", "in", [True]), True),
        (c("tool", "in", ["fs.read_file", "fs.list_directory"]), True),
        (c("agent", "not_in", ["claude"]), False),
        (c("params.missing", "in", ["x"]), False),
        (c("params.missing", "not_in", ["x"]), False),  # missing fails every comparison
        (c("params.tags", "not_in", ["x"]), False),  # a list is no scalar
        (c("params.obj", "not_in", ["x"]), False),
        # contains: substring, or list membership
        (c("params.text", "contains", "lo wo"), True),
        (c("params.text", "contains", "xyz"), False),
        (c("params.tags", "contains", "b"), True),
        (c("params.tags", "contains", 7), True),
        (c("params.tags", "contains", "7"), True),  # config "7" is a number, as with ==
        (c("params.nums", "contains", "x"), False),
        (c("params.nums", "contains", 2.0), True),
        (c("params.n", "contains", 3), False),
        (c("params.text", "contains", 3), False),
        # starts_with / ends_with: strings; a list passes when every element does
        (c("params.branch", "starts_with", "feature/"), True),
        (c("params.branch", "starts_with", "main"), False),
        (c("params.path", "ends_with", ".py"), True),
        (c("params.path", "ends_with", ".js"), False),
        (c("params.paths", "starts_with", "/home/me/"), True),
        (c("params.mixed", "starts_with", "/home/me/"), False),
        (c("params.empty", "starts_with", "/"), False),  # an empty list proves nothing
        (c("params.n", "starts_with", "3"), False),
        (c("params.tags", "starts_with", "a"), False),  # not a list of strings
        # matches: RE2 search, unanchored unless ^ $
        (c("params.branch", "matches", "^feature/[a-z]+$"), True),
        (c("params.branch", "matches", "x"), True),
        (c("params.branch", "matches", "^x"), False),
        (c("params.path", "matches", r"\.(py|txt)$"), True),
        (c("params.mixed", "matches", "^/home/"), False),
        (c("params.n", "matches", "3"), False),
        (c("params.text", "matches", "(a+)+b"), False),  # no backtracking blow-up with RE2
        # within: paths
        (c("params.path", "within", "/home/me/project"), True),
        (c("params.path", "within", "/home/me/project/"), True),
        (c("params.path", "within", "/home/me//project/./"), True),
        (c("params.path", "within", "/home/me/other"), False),
        (c("params.paths", "within", "/home/me/project"), True),
        (c("params.mixed", "within", "/home/me/project"), False),
        (c("params.path", "within", "/"), True),
        (c("params.n", "within", "/"), False),
        # combinators
        ({"all": [c("params.n", ">", 1), c("params.branch", "starts_with", "feature/")]}, True),
        ({"all": [c("params.n", ">", 1), c("params.branch", "starts_with", "main")]}, False),
        ({"any": [c("params.n", ">", 5), c("params.branch", "starts_with", "feature/")]}, True),
        ({"any": [c("params.n", ">", 5), c("params.branch", "==", "main")]}, False),
        ({"not": c("params.n", ">", 5)}, True),
        ({"not": c("params.n", "<", 5)}, False),
        ({"not": c("params.missing", "==", 1)}, True),  # a missing field's comparison is false
        (
            {
                "all": [
                    {"any": [c("agent", "==", "x"), c("agent", "==", "claude")]},
                    {"not": {"field": "params.path", "operator": "within", "value": "/etc"}},
                ]
            },
            True,
        ),
        ({"not": {"not": c("params.n", "==", 3)}}, True),
    ],
)
def test_holds(data: dict[str, Any], expected: bool) -> None:
    assert condition_holds(cond(data), CALL) is expected


BASE = "/home/me/project"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/me/project", True),
        ("/home/me/project/", True),
        ("/home/me/project/a/b.txt", True),
        ("/home/me/project/./a", True),
        ("/home/me/project//a", True),
        ("//home/me/project/a", True),  # a leading // is collapsed like any other
        ("/home/me/project/a/../b", True),
        ("/home/me/project/a/../../project/b", True),
        ("/home/me/project/..", False),
        ("/home/me/project/../../etc", False),
        ("/home/me/project/../../etc/passwd", False),
        ("/home/me/project/a/../../../../../etc", False),
        ("/home/me/project/../project-evil/x", False),
        ("/home/me/project-evil", False),
        ("/home/me/project-evil/x", False),
        ("/home/me/projectx", False),
        ("/home/me", False),
        ("/home/me/proj", False),
        ("home/me/project/a", False),  # relative: relative to what?
        ("./home/me/project", False),
        ("", False),
        ("~/project", False),
        ("/home/me/project/\0/x", False),
        ("/home/me/project/a\\..\\..\\..\\etc", True),  # a backslash is a name character on POSIX
        ("///home///me///project///", True),
    ],
)
def test_within_traversal(path: str, expected: bool) -> None:
    assert within(path, BASE) is expected
    assert (
        condition_holds(cond(c("params.p", "within", BASE + "/")), {"params": {"p": path}})
        is expected
    )


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a/b/../c", "/a/c"),
        ("/a/./b/", "/a/b"),
        ("//a//b", "/a/b"),
        ("/..", "/"),
        ("/", "/"),
        ("a/b", None),
        ("", None),
    ],
)
def test_normalise(raw: str, normal: str | None) -> None:
    assert normalise(raw) == normal


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "empty condition"),
        (
            {"field": "params.a", "operator": "==", "value": 1, "all": [c("x", "==", 1)]},
            "one form per condition, got {field, operator, value} and all",
        ),
        (
            {"all": [c("x", "==", 1)], "not": c("x", "==", 1)},
            "one form per condition, got all and not",
        ),
        ({"all": []}, "all: needs at least one condition"),
        ({"any": []}, "any: needs at least one condition"),
        ({"operator": "==", "value": 1}, "field: required"),
        ({"field": "params.a", "value": 1}, "operator: required"),
        ({"field": "params.a", "operator": "=="}, "value: required for operator =="),
        (c("params.a", "in", "main"), "value: in needs a non-empty list"),
        (c("params.a", "not_in", []), "value: not_in needs a non-empty list"),
        (c("params.a", "in", [{"x": 1}]), "value: in needs a non-empty list"),
        (c("params.a", "contains", ["x"]), "value: contains needs a string, number or boolean"),
        (c("params.a", "starts_with", ""), "value: starts_with needs a non-empty string"),
        (c("params.a", "ends_with", 3), "value: ends_with needs a non-empty string"),
        (
            c("params.a", "matches", "(a)\\1"),
            "value: matches: invalid regex '(a)\\\\1': invalid escape",
        ),
        (c("params.a", "matches", "(?=x)"), "invalid perl operator"),
        (c("params.a", "matches", "[a-"), "missing ]"),
        (c("params.a", "matches", "a" * 1001), "the regex is 1001 characters long, at most 1000"),
        (
            c("params.a", "matches", "((((((((((a{100}){100}){100}){100}))))))"),
            "value: matches: invalid regex",
        ),
        (c("params.a", "matches", 5), "value: matches needs a regular expression as a string"),
        (c("params.a", "within", "relative/dir"), "value: within needs an absolute path"),
        (c("params.a", "within", None), "value: within needs an absolute path"),
        (c("params.a", "=~", "x"), "Input should be '<'"),
        ({"all": [c("params.a", "within", "x")]}, "value: within needs an absolute path"),
        ({"not": {"nope": 1}}, "Extra inputs are not permitted"),
    ],
)
def test_load_errors(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        cond(data)
    assert problem in str(info.value)


def test_regex_is_linear_on_a_long_input() -> None:
    # (a+)+$ is exponential for a backtracking engine on "aaa...b"; RE2 answers at once.
    long = {"params": {"s": "a" * 200_000 + "b"}}
    assert condition_holds(cond(c("params.s", "matches", "^(a+)+$")), long) is False


def test_engine_uses_v2_and_says_which_condition() -> None:
    policy = Policy.model_validate(
        {
            "name": "dev",
            "agent": "claude",
            "rules": [
                {
                    "tools": ["fs.*"],
                    "action": "allow",
                    "condition": {
                        "all": [
                            c("params.path", "within", "/home/me/project"),
                            {"not": c("params.path", "ends_with", ".env")},
                        ]
                    },
                },
                {"tools": ["fs.*"], "action": "human_approval"},
            ],
        }
    )
    engine = PolicyEngine([policy])
    ok = engine.evaluate("claude", "fs.read_file", {"path": "/home/me/project/a"}, now=0)
    assert ok.action == "allow" and "params.path within '/home/me/project'" in ok.reason
    for path in (
        "/home/me/project/../../etc/passwd",
        "/home/me/project-evil/a",
        "/home/me/project/.env",
    ):
        assert (
            engine.evaluate("claude", "fs.read_file", {"path": path}, now=0).action
            == "human_approval"
        )
    static = engine.evaluate_static("claude", "fs.read_file")
    assert "conditional: only when (params.path within" in static.reason


def test_describe() -> None:
    text = describe(cond({"any": [c("agent", "==", "a"), {"not": c("params.n", "in", [1, 2])}]}))
    assert text == "(agent == 'a' or not params.n in [1, 2])"
