"""What the HTTP edge reads of a request, the same for the REST routes, the `/tool` fast path and
`/mcp`: who is calling (`Authorization: Bearer agent:<id>`, compat.md §3) and its JSON body
(within 1 MiB). A request that cannot be served becomes `HttpError(status, message)`, which
every REST route answers as `{"error": message}` with that status (`error`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Receive

MAX_BODY_BYTES = 1 << 20
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


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def read_json(headers: Mapping[str, str], receive: Receive) -> Any:
    """The request body as JSON (an empty body is `{}`), within MAX_BODY_BYTES."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HttpError(413, f"request body too large: limit is {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"request body too large: limit is {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and json's JSONDecodeError are ValueErrors
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise HttpError(400, "invalid JSON body: nested too deeply") from None
