"""The web console at `/ui`, served by the gateway on its own port: pending approvals (approve /
deny with a reason), live traces, the health of every role and upstream, grants (revoke), freezes
(thaw), tools whose definition changed since pinned (accept) and descriptions flagged for
injection phrases.

Server side: one Jinja2 page and a server-sent-events stream of trace records (`/ui/events`,
from the trace writer's `trace.*` events). Everything else the page reads and does through the
mesh's own HTTP API (`/approvals`, `/traces`, `/health`, `/mcp-servers`, `/grants`,
`/freezes`, `/tools`, `POST /tools/{name}/accept`), so the console can do nothing the API does
not allow: read-only without the operator token when the mesh has one; the token, typed into the
page, is kept in the tab's sessionStorage and sent only in the `X-Operator-Token` header;
operator routes refuse other sites' `Origin`.

No build step, no CDN: the template, the script and the stylesheet ship in this package.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bus.events import Subscriber

VERSION = version("agent-mesh")  # as installed, from pyproject.toml


class Host(Protocol):
    """What the console reads of the gateway that serves it (gateway/http.py `Gateway`)."""

    @property
    def loaded(self) -> Any: ...
    @property
    def events_endpoint(self) -> str | None: ...


HERE = Path(__file__).parent
# The page runs only its own script: no inline code, nothing from elsewhere, never in a frame.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
PING = 15.0  # s between SSE keep-alive comments
MAX_STREAMS = 64  # open /ui/events streams (each holds a bus subscription); more: 503


class Console:
    def __init__(self, gateway: Host) -> None:
        self.gw = gateway
        self.streams = 0
        self._templates: Any = None  # Jinja2Templates, made at the first page view

    def templates(self) -> Any:
        # Jinja2 and sse-starlette are imported when the console is first used, not when the
        # gateway starts: a restarted gateway answers calls sooner.
        if self._templates is None:
            from starlette.templating import Jinja2Templates

            self._templates = Jinja2Templates(directory=HERE / "templates")
        return self._templates

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ui", self.page, methods=["GET"]),
            Route("/ui/", self.redirect, methods=["GET"]),
            Route("/ui/events", self.events, methods=["GET"]),
            Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static"),
        ]

    async def redirect(self, request: Request) -> Response:
        return RedirectResponse("/ui")

    async def page(self, request: Request) -> Response:
        config = self.gw.loaded.config
        context: dict[str, Any] = {
            "token_required": config.auth.operator_token is not None,
            "version": VERSION,
            "supervisor": config.supervisor.enabled,
        }
        response: Response = self.templates().TemplateResponse(
            request, "console.html", context, headers=SECURITY_HEADERS
        )
        return response

    async def events(self, request: Request) -> Response:
        """Every trace record the trace writer stores (new calls, a waiting call, its final
        record), as `event: trace` with the record as JSON; newest last, the page puts them
        first."""
        from sse_starlette import EventSourceResponse

        if self.streams >= MAX_STREAMS:
            return JSONResponse(
                {"error": f"too many live consoles ({MAX_STREAMS}); close one"}, status_code=503
            )
        return EventSourceResponse(self._traces(), ping=PING, headers={"cache-control": "no-store"})

    async def _traces(self) -> AsyncIterator[dict[str, str]]:
        self.streams += 1
        try:
            yield {"event": "hello", "data": "{}"}  # the page knows the stream is open
            endpoint = self.gw.events_endpoint
            if endpoint is None:  # no event socket (gateway on another host): the page polls
                return
            subscriber = Subscriber(endpoint, "trace.")
            try:
                async for _topic, record in subscriber:
                    yield {"event": "trace", "data": json.dumps(record, default=str)}
            finally:
                with contextlib.suppress(Exception):
                    subscriber.close()
        finally:
            self.streams -= 1
