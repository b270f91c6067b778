"""Rule conditions (compat.md §2): `{field, operator, value}` evaluated against one call.

`condition_holds` never raises: anything it cannot compare makes the condition false.

Semantics:
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
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from policy.model import Condition

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


def condition_holds(cond: Condition, call: Mapping[str, Any]) -> bool:
    """True when `cond` holds for `call`; False on a missing field or any type mismatch."""
    try:
        actual = _lookup(call, cond.field)
        if actual is _MISSING:
            return False
        return _compare(cond.operator, actual, cond.value)
    # Never raise: a bad condition skips its rule instead of failing the call (e.g. huge ints).
    except Exception:  # noqa: BLE001
        return False
