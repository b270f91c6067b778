"""Which JSON values the bus carries to an upstream unchanged, and JSON text for any of them.

Everything `json.loads` accepts crosses the bus as it came, integers of any size included
(frames.py, EXT_BIG_INT), except what no JSON peer could be given back faithfully: a float that
is not finite (`1e400` parses to infinity; `NaN` and `Infinity` are Python's extensions), a
string holding a lone surrogate (`"\\ud800"`: not Unicode, msgpack cannot encode it), and nesting
deeper than MAX_DEPTH. `refusal` names the first such value by its path, for a precise 400 or
JSON-RPC -32602 before anything is sent (PROTOCOL.md, "Values").
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_DEPTH = 100  # containers inside one value: far beyond real tool arguments, well within every
# parser and encoder on the way (the MCP SDK's JSON parser stops at about 200, msgpack at 511)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHOWN_STEPS = 12  # of a very deep path


def refusal(value: Any, root: str = "params") -> str | None:
    """`<path>: <what is wrong>` for the first value in `value` the bus would not carry
    faithfully, else None. `root` names `value` itself in the path (`params`, `arguments`)."""
    found = _find(value, 1)
    if found is None:
        return None
    steps, why = found
    steps.reverse()
    if len(steps) > _SHOWN_STEPS:
        steps = [*steps[: _SHOWN_STEPS // 2], "…", *steps[-_SHOWN_STEPS // 2 :]]
    return root + "".join(s if s == "…" else _step(s) for s in steps) + ": " + why


def _find(value: Any, depth: int) -> tuple[list[Any], str] | None:
    """(the path to the bad value, innermost step first; why) — paths are built only on failure."""
    kind = type(value)
    if kind is str:
        return (
            None if value.isascii() or (bad := _surrogate(value)) is None else ([], "string " + bad)
        )
    if kind is float:
        if math.isfinite(value):
            return None
        return [], (
            "NaN is not a JSON number"
            if math.isnan(value)
            else "number out of range (no 64-bit float holds it; Infinity is not JSON)"
        )
    if kind is dict:
        if depth > MAX_DEPTH:
            return [], f"nested deeper than {MAX_DEPTH} levels"
        for key, item in value.items():
            if type(key) is not str:
                return [key], "object keys must be strings"
            if not key.isascii() and (bad := _surrogate(key)) is not None:
                return [key], "key " + bad
            if (found := _find(item, depth + 1)) is not None:
                found[0].append(key)
                return found
        return None
    if kind is list:
        if depth > MAX_DEPTH:
            return [], f"nested deeper than {MAX_DEPTH} levels"
        for index, item in enumerate(value):
            if (found := _find(item, depth + 1)) is not None:
                found[0].append(index)
                return found
        return None
    if value is None or kind is bool or kind is int:
        return None
    return [], f"{kind.__name__} is not a JSON value"


def _surrogate(text: str) -> str | None:
    try:
        text.encode("utf-16")  # refuses lone surrogates like UTF-8 does, in a fifth of the time
    except UnicodeEncodeError as exc:
        return (
            f"holds a lone surrogate \\u{ord(text[exc.start]):04x} at character {exc.start}: "
            "not Unicode, which a JSON string must be"
        )
    return None


def _step(step: Any) -> str:
    if isinstance(step, int):
        return f"[{step}]"
    text = str(step)
    return f".{text}" if _NAME.match(text) else "[" + json.dumps(text) + "]"


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8) of a value the bus carried: orjson, or the standard library for what
    orjson refuses (integers beyond 64 bits, nesting past 255). Other objects as str()."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode(
            "utf-8", "backslashreplace"
        )
