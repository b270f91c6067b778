"""`${VAR}` in config values (extension): expanded from the environment when a file is loaded,
so a secret such as `auth.operator_token` need not be written in the file.

- `${NAME}`: the variable's value; unset → a config problem naming the variable (and, through
  the caller, the field and the file).
- `${NAME:-default}`: `default` when NAME is unset or empty, as in sh (`${NAME:-}`: empty).
- `$${` is a literal `${`. Anything else after `${` is a problem, not left as it is.

Only string values are expanded (mapping keys are not), and an expanded value is not expanded
again. Pure: the caller passes the environment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Loc = tuple[str | int, ...]
Report = Callable[[Loc, str], None]

_REF = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")


def expand(data: Any, environ: Mapping[str, str], report: Report, loc: Loc = ()) -> Any:
    """`data` with every `${...}` in its string values expanded. A value with a problem is kept
    as written, after `report(loc, problem)`, so the other fields are still checked."""
    if isinstance(data, dict):
        return {key: expand(value, environ, report, (*loc, key)) for key, value in data.items()}
    if isinstance(data, list):
        return [expand(item, environ, report, (*loc, i)) for i, item in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group() == "$${":
            return "${"
        name, default = match.group("name"), match.group("default")
        if name is None:
            problems.append(
                f"invalid variable reference at {data[match.start() : match.start() + 12]!r}"
                " (write ${NAME}, ${NAME:-default}, or $${ for a literal ${)"
            )
            return match.group()
        value = environ.get(name)
        if default is not None:
            return value or default
        if value is None:
            problems.append(
                f"environment variable {name} is not set (export it, or write "
                f"${{{name}:-default}} for a default)"
            )
            return match.group()
        return value

    expanded = _REF.sub(substitute, data)
    for problem in problems:
        report(loc, problem)
    return data if problems else expanded
