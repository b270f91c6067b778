"""`/mcp`, built in the background once the gateway serves: the MCP SDK takes ~2 s of CPU to
import here, which a gateway restarted by supervisord should not spend before it answers REST
again. Requests to /mcp that arrive earlier wait for it (up to READY_WAIT)."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.frontend import FrontEnd

log = logging.getLogger(__name__)

READY_WAIT = 30.0  # s a request may wait for the endpoint (import under load can be slow)


class DeferredMcpHttp:
    def __init__(self, frontend: FrontEnd) -> None:
        self.frontend = frontend
        self.app: Any = None  # gateway.mcp_http.McpHttp once built
        self.problem = ""  # why it could not be built
        self._ready = asyncio.Event()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(self._serve(stop), name="mcp-http")
        try:
            yield
        finally:
            stop.set()
            await task

    async def _serve(self, stop: asyncio.Event) -> None:
        try:
            # In a thread: the loop keeps answering REST while the SDK imports.
            module = await asyncio.to_thread(importlib.import_module, "gateway.mcp_http")
            app = module.McpHttp(self.frontend)
            async with app.lifespan():
                self.app = app
                self._ready.set()
                await stop.wait()
        except Exception as exc:
            log.exception("the MCP endpoint /mcp failed to start")
            self.problem = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            try:
                await asyncio.wait_for(self._ready.wait(), READY_WAIT)
            except TimeoutError:
                self.problem = self.problem or f"not ready after {READY_WAIT:g}s"
        if self.app is None:
            body = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32603,
                    "message": f"the MCP endpoint is unavailable: {self.problem}",
                },
            }
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)
