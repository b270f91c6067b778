"""Load-time checks of one rule condition (policy/model.py `Condition`): exactly one form, the
fields each form needs, and a value each operator can use. A problem is a ValueError whose text
names the bad part (`value: ...`, `operator: ...`); the config loader prefixes the policy and rule.

What an operator needs is compiled here once, so evaluation (policy/conditions.py) never fails:
`matches` → an RE2 regex (linear-time matching: no catastrophic backtracking whatever the
pattern or the input; at most MAX_PATTERN characters and MAX_PROGRAM bytes of compiled program;
backreferences and lookaround are refused), `within` → the normalised base path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

from policy.paths import normalise

MAX_PATTERN = 1000  # characters of a `matches` regex
MAX_PROGRAM = 1 << 20  # bytes of memory RE2 may use for one compiled regex
SCALARS = (str, int, float, bool)


class Condition(Protocol):
    """What is checked of policy/model.py's `Condition` (read-only: the model is frozen). A
    protocol, so that the model may call `check` without the two modules importing each other."""

    @property
    def field(self) -> str | None: ...
    @property
    def operator(self) -> str | None: ...
    @property
    def value(self) -> Any: ...
    @property
    def all(self) -> Sequence[Any] | None: ...
    @property
    def any(self) -> Sequence[Any] | None: ...
    @property
    def not_(self) -> Any: ...
    @property
    def model_fields_set(self) -> set[str]: ...


@functools.cache
def _re2() -> tuple[Any, Any]:
    """The RE2 module and its options, imported on the first `matches` (every process loads the
    policy models; few configs use regexes)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the problem goes into the config error, not to stderr
    options.max_mem = MAX_PROGRAM
    return re2, options


def _forms(cond: Condition) -> list[str]:
    forms = []
    if cond.field is not None or cond.operator is not None or "value" in cond.model_fields_set:
        forms.append("{field, operator, value}")
    forms += [
        name
        for name, part in (("all", cond.all), ("any", cond.any), ("not", cond.not_))
        if part is not None
    ]
    return forms


def check(cond: Condition) -> Any:
    """Raise ValueError naming the problem; return what evaluation needs (regex, path, None)."""
    forms = _forms(cond)
    if not forms:
        raise ValueError(
            "empty condition: give {field, operator, value}, all: [...], any: [...] or not: {...}"
        )
    if len(forms) > 1:
        raise ValueError(
            f"one form per condition, got {' and '.join(forms)}; combine them with "
            "all: [...] or any: [...]"
        )
    for name in ("all", "any"):
        if getattr(cond, name) == []:
            raise ValueError(f"{name}: needs at least one condition")
    if forms[0] != "{field, operator, value}":
        return None
    if cond.field is None:
        raise ValueError("field: required (e.g. params.path, tool, agent)")
    if cond.operator is None:
        raise ValueError("operator: required")
    if "value" not in cond.model_fields_set:
        raise ValueError(f"value: required for operator {cond.operator}")
    return _value(cond.operator, cond.value)


def _value(op: str, value: Any) -> Any:
    if op in ("in", "not_in"):
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, SCALARS) for v in value)
        ):
            raise ValueError(
                f"value: {op} needs a non-empty list of strings, numbers or booleans "
                f"(e.g. [a, b]), got {value!r}"
            )
    elif op == "contains":
        if not isinstance(value, SCALARS):
            raise ValueError(f"value: contains needs a string, number or boolean, got {value!r}")
    elif op in ("starts_with", "ends_with"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"value: {op} needs a non-empty string, got {value!r}")
    elif op == "matches":
        return _regex(value)
    elif op == "within":
        base = normalise(value) if isinstance(value, str) else None
        if base is None:
            raise ValueError(
                f"value: within needs an absolute path (e.g. /home/me/project), got {value!r}"
            )
        return base
    return None


def _regex(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError(f"value: matches needs a regular expression as a string, got {value!r}")
    if len(value) > MAX_PATTERN:
        raise ValueError(
            f"value: matches: the regex is {len(value)} characters long, at most "
            f"{MAX_PATTERN} are allowed"
        )
    re2, options = _re2()
    try:
        return re2.compile(value, options)
    except re2.error as exc:
        why = (
            exc.args[0].decode(errors="replace")
            if exc.args and isinstance(exc.args[0], bytes)
            else str(exc)
        )
        raise ValueError(
            f"value: matches: invalid regex {value!r}: {why} (RE2 syntax: no "
            "backreferences or lookaround)"
        ) from None
