"""The HTTP edge's one error type, its answer and the JSON body reader, shared by the REST routes
and the `/tool` fast path: a request that cannot be served becomes `HttpError(status, message)`,
which every route answers as `{"error": message}` with that status (`error`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Receive

MAX_BODY_BYTES = 1 << 20


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
