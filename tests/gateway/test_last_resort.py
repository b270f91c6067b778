"""Whatever escapes a handler is a JSON 500 `{"error": "internal error", "trace_id"}`: logged
once with the trace id, counted, no traceback or exception text to the caller, and the server
keeps the connection (nothing re-raised to uvicorn)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import last_resort
from gateway.http_edge import EdgeRoutes
from gateway.last_resort import LastResort

SECRET = "secret-detail-from-deep-inside"


async def broken(request: Request) -> Response:
    raise RuntimeError(SECRET)


async def fine(request: Request) -> Response:
    return JSONResponse({"ok": True})


class BrokenPipeline:
    async def call_tool(self, *args: Any, **kwargs: Any) -> Any:
        raise KeyError(SECRET)


def app() -> Any:
    starlette = Starlette(
        routes=[Route("/broken", broken), Route("/fine", fine)],
        exception_handlers={Exception: last_resort.handler},
    )
    return EdgeRoutes(LastResort(starlette), BrokenPipeline())  # type: ignore[arg-type]


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://mesh")


def logged(caplog: pytest.LogCaptureFixture, trace_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "gateway.internal_error" and trace_id in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/broken", {}),
        ("GET", "/broken", {"X-Trace-Id": "given-by-the-caller"}),
        ("POST", "/tool/fs.read_file", {"traceparent": "00-" + "ab" * 16 + "-00f067aa0ba902b7-01"}),
    ],
)
async def test_an_escaped_exception_is_a_json_500_logged_once_and_counted(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    before = last_resort.internal_errors()
    with caplog.at_level(logging.ERROR):
        r = await client.request(method, path, headers=headers, json={"params": {}})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal error"
    trace_id = body["trace_id"]
    assert r.headers["x-trace-id"] == trace_id
    if "X-Trace-Id" in headers:
        assert trace_id == "given-by-the-caller"
    if "traceparent" in headers:
        assert trace_id == "ab" * 16 and body["policy"] == "error"  # the tool call's own shape
    assert SECRET not in r.text and "Traceback" not in r.text and "Error" not in r.text
    assert last_resort.internal_errors() == before + 1
    (record,) = logged(caplog, trace_id)  # once, with the trace id and the traceback
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])
    assert (await client.get("/fine")).json() == {"ok": True}  # and the gateway goes on


async def test_lifespan_failures_still_surface() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        await LastResort(failing)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
