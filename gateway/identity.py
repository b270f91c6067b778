"""Who is calling: the agent id from `Authorization: Bearer agent:<id>` (compat.md §3)."""

from __future__ import annotations

import re

ANONYMOUS = "anonymous"
_AGENT = re.compile(r"Bearer\s+agent:([A-Za-z0-9._:@/+-]{1,128})\s*", re.IGNORECASE)


class IdentityError(ValueError):
    pass


def agent_from_authorization(header: str | None) -> str:
    """No header → "anonymous"; `Bearer agent:<id>` → id; anything else is refused (401)."""
    if header is None or not header.strip():
        return ANONYMOUS
    match = _AGENT.fullmatch(header.strip())
    if match is None:
        raise IdentityError(
            "Authorization header must be 'Bearer agent:<id>' "
            "(id: 1-128 of letters, digits and . _ : @ / + -)"
        )
    return match.group(1)
