"""`agent-mesh connect --url URL`: a thin stdio ⇄ Streamable HTTP relay, so Claude Code (stdio)
can use a mesh running in another process or on another host. No upstreams, no policy of its
own: MCP messages are relayed both ways as they are, with the agent identity as the bearer.

A mesh that cannot be reached is one line on stderr and exit status 1: checked before the relay
starts (so the MCP client hears of it at once), and again if the connection fails later.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server

from agent_mesh.errors import UserError, connection_reason
from gateway.mcp_sdk import create_mcp_http_client

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0


async def _relay(source: Any, sink: Any, what: str) -> None:
    async for message in source:
        if isinstance(message, Exception):  # transport trouble on one message: report, keep going
            log.warning("%s: %s", what, message)
            continue
        await sink.send(message)


def endpoint_of(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/mcp") else base + "/mcp"


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _unreachable(endpoint: str, exc: BaseException) -> UserError:
    return UserError(
        f"cannot reach the mesh at {endpoint}: {connection_reason(exc)}; is it running? "
        "(start it with `agent-mesh serve`, or give its address with --url)"
    )


async def probe(endpoint: str, agent: str) -> None:
    """Raise UserError unless something answers HTTP at `endpoint` (any status will do)."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as http:
            await http.get(
                endpoint,
                headers={"Authorization": f"Bearer agent:{agent}", "Accept": "text/event-stream"},
            )
    except httpx.InvalidURL as exc:
        raise UserError(f"invalid --url {endpoint!r}: {exc}") from None
    except httpx.HTTPError as exc:
        raise _unreachable(endpoint, exc) from None


async def relay(url: str, agent: str) -> None:
    endpoint = endpoint_of(url)
    await probe(endpoint, agent)
    http = create_mcp_http_client(headers={"Authorization": f"Bearer agent:{agent}"})
    try:
        async with (
            http,
            streamable_http_client(endpoint, http_client=http) as remote,
            stdio_server() as local,
            anyio.create_task_group() as tasks,
        ):

            async def to_remote() -> None:
                await _relay(local[0], remote[1], "from stdin")
                tasks.cancel_scope.cancel()  # stdin closed: the client is gone, end the session

            tasks.start_soon(to_remote)
            await _relay(remote[0], local[1], f"from {endpoint}")
            tasks.cancel_scope.cancel()
    except Exception as exc:
        cause = _root_cause(exc)
        if type(cause).__module__.split(".")[0] in (
            "httpx",
            "httpx2",
            "httpcore",
        ):  # the mesh went away
            raise _unreachable(endpoint, exc) from exc
        raise


def main(url: str, agent: str) -> int:
    import uvloop

    logging.basicConfig(
        level=logging.WARNING, format="agent-mesh connect: %(levelname)s %(message)s"
    )
    try:
        uvloop.run(relay(url, agent))
    except KeyboardInterrupt:
        pass
    return 0
