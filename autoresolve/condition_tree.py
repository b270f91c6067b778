"""The evaluation side of rule conditions (autoresolve/conditions.py has the language and its
semantics): a parsed condition is a tree of these nodes, evaluated against one call. Nothing here
raises on odd params; what cannot be compared is false."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Call = Mapping[str, Any]  # {"tool", "server", "agent", "policy_rule", "injection_risk", "params"}
_PATH_KEYS = frozenset(
    {
        "path",
        "paths",
        "source",
        "destination",
        "src",
        "dst",
        "dest",
        "file",
        "files",
        "filename",
        "filepath",
        "dir",
        "directory",
        "cwd",
        "root",
        "target",
    }
)
_PATH_SUFFIXES = ("_path", "_paths", "_dir", "_file", "_directory")
_MISSING = object()


class Node:
    def holds(self, call: Call) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Or(Node):
    items: tuple[Node, ...]

    def holds(self, call: Call) -> bool:
        return any(item.holds(call) for item in self.items)


@dataclass(frozen=True)
class And(Node):
    items: tuple[Node, ...]

    def holds(self, call: Call) -> bool:
        return all(item.holds(call) for item in self.items)


@dataclass(frozen=True)
class Not(Node):
    item: Node

    def holds(self, call: Call) -> bool:
        return not self.item.holds(call)


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]  # ("params", "path") or ("tool",)

    @property
    def is_path(self) -> bool:
        key = self.path[-1].lower()
        return self.path[0] == "params" and (key in _PATH_KEYS or key.endswith(_PATH_SUFFIXES))

    def lookup(self, call: Call) -> object:
        current: object = call
        for part in self.path:
            if not isinstance(current, Mapping) or part not in current:
                return _MISSING
            current = current[part]
        return current


@dataclass(frozen=True)
class Truth(Node):
    field: Field

    def holds(self, call: Call) -> bool:
        return self.field.lookup(call) is True


@dataclass(frozen=True)
class Compare(Node):
    field: Field
    op: str
    value: Any  # Scalar, tuple[Scalar, ...] for `in`, re.Pattern for `matches`
    path: bool  # path-valued: normalise both sides

    def holds(self, call: Call) -> bool:
        actual = self.field.lookup(call)
        if isinstance(actual, list):
            if self.op == "contains":
                return any(_equal(item, self.value, self.path) for item in actual)
            return bool(actual) and all(self._one(item) for item in actual)
        return self._one(actual)

    def _one(self, actual: object) -> bool:
        test = _TESTS[self.op]
        try:
            return test(actual, self.value, self.path)
        except (TypeError, ValueError):
            return False


def normalise_path(value: str) -> str:
    """`/home/user/../../etc//x/` -> `/etc/x`. posixpath keeps a leading `//`: collapse it too."""
    if value.startswith("//"):
        value = "/" + value.lstrip("/")
    return posixpath.normpath(value) if value else value


def is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _text(actual: object, path: bool) -> str | None:
    if not isinstance(actual, str):
        return None
    return normalise_path(actual) if path else actual


def _equal(actual: object, expected: object, path: bool) -> bool:
    if is_number(actual) and is_number(expected):
        return actual == expected
    if isinstance(actual, bool) and isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, str) and isinstance(expected, str):
        return _text(actual, path) == expected
    return False


def _not_equal(actual: object, expected: object, path: bool) -> bool:
    comparable = (is_number(actual) and is_number(expected)) or (
        type(actual) is type(expected) and isinstance(actual, str | bool)
    )
    return comparable and not _equal(actual, expected, path)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[object, object, bool], bool]:
    return lambda actual, expected, _: is_number(actual) and compare(actual, expected)


def _starts_with(actual: object, prefix: object, path: bool) -> bool:
    text = _text(actual, path)
    if text is None or not isinstance(prefix, str):
        return False
    if not path:
        return text.startswith(prefix)
    return text == prefix or text.startswith(prefix.rstrip("/") + "/")  # whole components


def _string_test(test: Callable[[str, str], bool]) -> Callable[[object, object, bool], bool]:
    def run(actual: object, expected: object, path: bool) -> bool:
        text = _text(actual, path)
        return text is not None and isinstance(expected, str) and test(text, expected)

    return run


def _matches(actual: object, pattern: object, path: bool) -> bool:
    text = _text(actual, path)
    return text is not None and isinstance(pattern, re.Pattern) and pattern.search(text) is not None


_TESTS: dict[str, Callable[[object, Any, bool], bool]] = {
    "==": _equal,
    "!=": _not_equal,
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
    "starts_with": _starts_with,
    "ends_with": _string_test(str.endswith),
    "contains": _string_test(lambda text, part: part in text),
    "matches": _matches,
    "in": lambda actual, options, path: any(_equal(actual, option, path) for option in options),
}
