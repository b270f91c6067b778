"""Rule conditions (compat.md §2) evaluated against one call: the Go form `{field, operator,
value}`, and (conditions v2, an extension) `all: [...]`, `any: [...]`, `not: {...}` and the
operators in, not_in, contains, starts_with, ends_with, matches, within.

`condition_holds` never raises: anything it cannot compare makes a comparison false. Values were
checked and compiled at load (policy/condition_check.py).

Semantics of the six Go comparisons (<, <=, >, >=, ==, !=):
- `call` is `{"params": {...}, "tool": str, "agent": str}`; `field` is a dotted path from that
  root (`params.amount`, `params.user.role`). A missing key, or a path that steps through a
  non-mapping (list, string, number, None) -> False. Lists are not indexed.
- Numbers are int/float, never bool. Number vs number: all six operators, numerically
  (1 == 1.0). NaN compares as a type mismatch (False).
- String vs string: only `==` / `!=`; ordering operators -> False.
- Bool vs bool: only `==` / `!=` (an extension; bool is never treated as a number).
- Any other pairing is a type mismatch -> False, for every operator including `!=`.
- A numeric *string in the config* (`value: "100"`, e.g. an accidental YAML quote) counts as a
  number when the call's value is a number. The reverse is NOT done: a string param `"50"` is
  never parsed, because params come from the agent (untrusted) while the config is trusted.
  (The Go project parses numeric string params too; we are deliberately stricter there.)

Conditions v2:
- `all` holds when every condition holds, `any` when one does, `not` when its condition does not.
  A missing field makes its comparison false, so `not` of it is true: to require a param, say so
  (`{all: [{field: params.x, operator: "!=", value: ""}, ...]}` or a positive test).
- `in` / `not_in`: the call's value is a string, number or boolean equal (as `==`) to one / none
  of the listed values. Anything else (missing, list, object) -> False for both.
- `contains`: a string param contains the string value; a list param has an element equal to it.
- `starts_with`, `ends_with`, `matches` (RE2 search: unanchored, `^...$` to anchor), `within`
  (policy/paths.py: normalised, whole path components, never symlinks): on a string param; on a
  non-empty list of strings, every element must pass (so an allow rule covers the whole list;
  for a deny rule use `not` with the safe form: `not: {field: params.paths, operator: within,
  value: /safe}`).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from policy.model import Condition
from policy.paths import within

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_EQUALITY: dict[str, Callable[[Any, Any], bool]] = {"==": operator.eq, "!=": operator.ne}

# Plain decimal literals only: float() would also accept "nan", "inf", "1_000" and padding.
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")

_MISSING = object()


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python; `true < 100` must not be a valid comparison.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _config_number(value: object) -> object:
    """The config value, with a numeric string turned into an int/float."""
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return int(value) if _INTEGER.fullmatch(value) else float(value)
    return value


def _lookup(call: Mapping[str, Any], path: str) -> object:
    current: object = call
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _compare(op: str, actual: object, expected: object) -> bool:
    if _is_number(actual):
        expected = _config_number(expected)
        if not _is_number(expected):
            return False
        fn = _ORDERING.get(op) or _EQUALITY[op]
        return fn(actual, expected)
    if op not in _EQUALITY:
        return False  # ordering is defined for numbers only
    same_kind = (isinstance(actual, str) and isinstance(expected, str)) or (
        isinstance(actual, bool) and isinstance(expected, bool)
    )
    return same_kind and _EQUALITY[op](actual, expected)


def _scalar(value: object) -> bool:
    return isinstance(value, (str, bool)) or _is_number(value)


def _each_string(actual: object, test: Callable[[str], bool]) -> bool:
    """A string passes `test`; a non-empty list of strings passes when every element does."""
    if isinstance(actual, str):
        return test(actual)
    if isinstance(actual, list) and actual and all(isinstance(v, str) for v in actual):
        return all(test(v) for v in actual)
    return False


def _operator(cond: Condition, actual: object) -> bool:
    op, value = cond.operator, cond.value
    if op in _ORDERING or op in _EQUALITY:
        return _compare(op, actual, value)
    if op in ("in", "not_in"):
        if not _scalar(actual):
            return False
        found = any(_compare("==", actual, option) for option in value)
        return found if op == "in" else not found
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        return isinstance(actual, list) and any(
            _compare("==", v, value) for v in actual if _scalar(v)
        )
    if op == "starts_with":
        return _each_string(actual, lambda text: text.startswith(value))
    if op == "ends_with":
        return _each_string(actual, lambda text: text.endswith(value))
    if op == "matches":
        pattern = cond.compiled
        return _each_string(actual, lambda text: pattern.search(text) is not None)
    if op == "within":
        base = cond.compiled
        return _each_string(actual, lambda text: within(text, base))
    return False


def _holds(cond: Condition, call: Mapping[str, Any]) -> bool:
    if cond.all is not None:
        return all(_holds(c, call) for c in cond.all)
    if cond.any is not None:
        return any(_holds(c, call) for c in cond.any)
    if cond.not_ is not None:
        return not _holds(cond.not_, call)
    try:
        actual = _lookup(call, cond.field or "")
        return actual is not _MISSING and _operator(cond, actual)
    # Never raise: a comparison it cannot make is false (e.g. an int too large for a float).
    except Exception:  # noqa: BLE001
        return False


def condition_holds(cond: Condition, call: Mapping[str, Any]) -> bool:
    """True when `cond` holds for `call`; a comparison on a missing field or a type mismatch
    is false."""
    return _holds(cond, call)


def describe(cond: Condition) -> str:
    """The condition as one line, for decision reasons: `params.path within '/srv' and not
    (...)`."""
    if cond.all is not None:
        return "(" + " and ".join(describe(c) for c in cond.all) + ")"
    if cond.any is not None:
        return "(" + " or ".join(describe(c) for c in cond.any) + ")"
    if cond.not_ is not None:
        return f"not {describe(cond.not_)}"
    return f"{cond.field} {cond.operator} {cond.value!r}"
