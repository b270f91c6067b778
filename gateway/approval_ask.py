"""The operator routes' one way to the approval service (approvals, grants, freezes): a typed
message built from the route's fields, sent, its error turned into the HTTP answer."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from bus.client import BusClient
from bus.errors import BusError, service_status
from bus.messages import APPROVAL, Body
from gateway.http_edge import HttpError


async def ask_approval(client: BusClient, op: type[Body], **fields: Any) -> Any:
    """The approval service's reply to `op(**fields)`; HttpError 400 names a bad field, a bus
    error keeps its status from the one error table (bus/errors.py)."""
    try:
        body = op(**fields).dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise HttpError(
            400, f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    try:
        return await client.request(APPROVAL, body, timeout=10.0)
    except BusError as exc:
        raise HttpError(service_status(exc.code), exc.message) from None


def caller(request: Request) -> str:
    """Who acted when the body does not say: Go's "http:<remote address>"."""
    client = request.client
    return f"http:{client.host}:{client.port}" if client else "http"
