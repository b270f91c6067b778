"""What the mesh needs of the `mcp` SDK (2.x) that the SDK keeps private, reached here only, so
an SDK upgrade that moves it breaks in this one module, under a name that says what it is.

- A session's connection: lowlevel handlers get a `ServerRequestContext`, whose `session` (a
  per-request `ServerSession`) holds the per-client `Connection` as `session._connection`: its
  `state` (per-connection scratch: the log level a client set), its `exit_stack` (run when the
  client goes: forget its subscriptions) and its transport `session_id`. The SDK's public
  `Context.connection` is not what `ServerRunner` hands lowlevel handlers (mcp/server/context.py).
- A new session's id: `StreamableHTTPSessionManager` names it `uuid4().hex`, with no hook;
  several gateway processes need the id to name the process that holds the session
  (gateway/peers.py), so `name_sessions` puts a prefix before it; and a session the mesh opened
  itself keeps its id when the SDK's machinery starts for it later (`sdk_session_named`).
- The SDK's answer to `initialize` without a session (gateway/mcp_sessions.py answers it):
  `ServerRunner`'s own negotiation and result building (`_negotiate_initialize`,
  `_handle_initialize`, `_serialize`), so the mesh says exactly what the SDK would.
- A session's transport by its id: `StreamableHTTPSessionManager._server_instances` (whether the
  SDK's session still runs, and holding its idle timer while the mesh answers a call on it).
- `create_mcp_http_client` (`mcp.shared._httpx_utils`): the HTTP client with the MCP transports'
  own timeouts (30 s; reads 300 s, for long-lived SSE streams), for `streamable_http_client`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, cast

from mcp.server import Server, streamable_http_manager
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import methods
from mcp_types.version import LATEST_HANDSHAKE_VERSION

__all__ = [
    "Connection",
    "connection",
    "create_mcp_http_client",
    "initialize_answer",
    "name_sessions",
    "sdk_session_named",
]

_next_id: ContextVar[str | None] = ContextVar("agent_mesh_next_session_id", default=None)


def name_sessions(prefix: str) -> None:
    """New /mcp session ids of this process are `<prefix><uuid hex>` (see the module docstring)."""

    class _Named:
        def __init__(self) -> None:
            self.hex = _next_id.get() or prefix + uuid.uuid4().hex

    streamable_http_manager.uuid4 = _Named  # type: ignore[attr-defined,assignment]


@contextlib.contextmanager
def sdk_session_named(session_id: str) -> Iterator[None]:
    """A session the SDK opens in this block (this task) is named `session_id`."""
    token = _next_id.set(session_id)
    try:
        yield
    finally:
        _next_id.reset(token)


def initialize_answer(server: Server[Any], params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `result` the SDK answers a handshake-era `initialize` with; None for params it
    refuses (then it answers, with its error)."""
    runner = ServerRunner(server, cast(Connection, None), None)
    version = LATEST_HANDSHAKE_VERSION  # a new connection's, before the handshake
    try:
        methods.validate_client_request("initialize", version, params)
        return runner._serialize("initialize", version, runner._handle_initialize(params))
    except (ValueError, KeyError, MCPError):  # pydantic's ValidationError is a ValueError
        return None


def connection(session: ServerSession) -> Connection:
    """The per-client connection behind `session` (see the module docstring)."""
    return session._connection


def sdk_transport(
    manager: streamable_http_manager.StreamableHTTPSessionManager, session_id: str
) -> StreamableHTTPServerTransport | None:
    """The SDK's transport of a session, None when the SDK holds no session by that id."""
    return manager._server_instances.get(session_id)
