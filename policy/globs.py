"""Glob matching for agent and tool patterns (compat.md §2), and agent-pattern specificity.

Only `*` is special: it matches any run of characters, dots included. Everything else is literal.
"""

from __future__ import annotations

import functools
import re

# Bounded: grant patterns come from API callers, so the set of patterns is not fixed by config.
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(pattern: str) -> re.Pattern[str]:
    # re.escape keeps `.`, `?`, `[`, `+` literal; DOTALL lets `*` cross any character.
    body = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(body, re.DOTALL)


def glob_matches(pattern: str, name: str) -> bool:
    """True when `name` matches `pattern` in full (`*` = any run of characters, dots included)."""
    if "*" not in pattern:
        return pattern == name
    return _compile(pattern).fullmatch(name) is not None


def agent_specificity(pattern: str) -> tuple[int, int]:
    """Sort key for agent patterns, most specific first.

    Tier 0: exact id (no `*`). Tier 1: globs, more literal characters first.
    Tier 2: patterns made only of `*`. Equal keys keep config order (use a stable sort).
    """
    if "*" not in pattern:
        return (0, 0)
    literals = len(pattern) - pattern.count("*")
    if literals == 0:
        return (2, 0)
    return (1, -literals)
