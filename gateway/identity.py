"""Who is calling: the agent id from `Authorization: Bearer agent:<id>` (compat.md §3)."""

from __future__ import annotations

import re

ANONYMOUS = "anonymous"
# The header, blank or a bearer, as one regex that both Python and JSON Schema read alike
# (GET /openapi.json describes the header with it).
AUTHORIZATION_PATTERN = (
    r"^[ \t]*(?:[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[Aa][Gg][Ee][Nn][Tt]:"
    r"([A-Za-z0-9._:@/+-]{1,128}))?[ \t]*$"
)
_AUTHORIZATION = re.compile(AUTHORIZATION_PATTERN)


class IdentityError(ValueError):
    pass


def claimed_agent(header: str | None) -> str | None:
    """The agent a caller says it is: None when it says nothing (no header, or a blank one);
    `Bearer agent:<id>` → id; anything else is refused (401)."""
    if header is None:
        return None
    match = _AUTHORIZATION.fullmatch(header)
    if match is None:
        raise IdentityError(
            "Authorization header must be 'Bearer agent:<id>' "
            "(id: 1-128 of letters, digits and . _ : @ / + -)"
        )
    return match.group(1)


def agent_from_authorization(header: str | None) -> str:
    """No header (or a blank one) → "anonymous"; `Bearer agent:<id>` → id; else 401."""
    return claimed_agent(header) or ANONYMOUS
