"""The deferred /mcp endpoint: requests wait for it; a build failure is a clear 503, REST
unaffected."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from gateway import mcp_deferred
from gateway.mcp_deferred import DeferredMcpHttp


class _Built:
    """Stands in for gateway.mcp_http.McpHttp: records the calls it serves."""

    def __init__(self, frontend: Any) -> None:
        self.frontend = frontend
        self.served: list[str] = []

    def lifespan(self) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def run() -> Any:
            yield

        return run()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: DeferredMcpHttp) -> tuple[int, bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/mcp", "headers": []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_an_early_request_waits_for_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    real_import = importlib.import_module

    class Module:
        McpHttp = _Built

    def slow_import(name: str) -> Any:
        if name != "gateway.mcp_http":
            return real_import(name)
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()  # held until the request waits
        return Module

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(importlib, "import_module", slow_import)
    deferred = DeferredMcpHttp(frontend=object())  # type: ignore[arg-type]
    waiting = asyncio.Event()
    ready_wait = deferred._ready.wait

    async def spied_wait() -> bool:  # the request waits for the endpoint: the moment to check
        waiting.set()
        return await ready_wait()

    monkeypatch.setattr(deferred._ready, "wait", spied_wait)
    async with deferred.lifespan():
        request = asyncio.create_task(_call(deferred))
        await asyncio.wait_for(waiting.wait(), 5)
        assert not request.done() and deferred.app is None
        gate.set()
        assert await asyncio.wait_for(request, 5) == (200, b"ok")
        built: Any = deferred.app  # the _Built stand-in
        assert built.served == ["/mcp"]


async def test_a_failed_build_answers_503_naming_the_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> Any:
        raise ImportError(f"no module named {name} (broken install)")

    monkeypatch.setattr(importlib, "import_module", broken)
    deferred = DeferredMcpHttp(frontend=object())  # type: ignore[arg-type]
    async with deferred.lifespan():
        status, body = await asyncio.wait_for(_call(deferred), 5)
    assert status == 503
    error = json.loads(body)["error"]
    assert error["code"] == -32603
    assert "ImportError: no module named gateway.mcp_http (broken install)" in error["message"]


async def test_a_request_that_waits_too_long_gets_503_not_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stuck(name: str) -> Any:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        raise ImportError("released at the end of the test")

    monkeypatch.setattr(importlib, "import_module", stuck)
    monkeypatch.setattr(mcp_deferred, "READY_WAIT", 0.1)
    deferred = DeferredMcpHttp(frontend=object())  # type: ignore[arg-type]
    async with deferred.lifespan():
        status, body = await asyncio.wait_for(_call(deferred), 5)
        release.set()
    assert status == 503
    assert (
        "the MCP endpoint is unavailable: not ready after 0.1s"
        in json.loads(body)["error"]["message"]
    )
