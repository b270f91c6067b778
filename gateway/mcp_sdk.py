"""What the mesh needs of the `mcp` SDK (2.x) that the SDK keeps private, reached here only, so
an SDK upgrade that moves it breaks in this one module, under a name that says what it is.

- A session's connection: lowlevel handlers get a `ServerRequestContext`, whose `session` (a
  per-request `ServerSession`) holds the per-client `Connection` as `session._connection`: its
  `state` (per-connection scratch: the log level a client set), its `exit_stack` (run when the
  client goes: forget its subscriptions) and its transport `session_id`. The SDK's public
  `Context.connection` is not what `ServerRunner` hands lowlevel handlers (mcp/server/context.py).
- A new session's id: `StreamableHTTPSessionManager` names it `uuid4().hex`, with no hook;
  several gateway processes need the id to name the process that holds the session
  (gateway/peers.py), so `name_sessions` puts a prefix before it.
- `create_mcp_http_client` (`mcp.shared._httpx_utils`): the HTTP client with the MCP transports'
  own timeouts (30 s; reads 300 s, for long-lived SSE streams), for `streamable_http_client`.
"""

from __future__ import annotations

import uuid

from mcp.server import streamable_http_manager
from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.shared._httpx_utils import create_mcp_http_client

__all__ = ["Connection", "connection", "create_mcp_http_client", "name_sessions"]


def name_sessions(prefix: str) -> None:
    """New /mcp session ids of this process are `<prefix><uuid hex>` (see the module docstring)."""
    if not prefix:
        return

    class _Named:
        def __init__(self) -> None:
            self.hex = prefix + uuid.uuid4().hex

    streamable_http_manager.uuid4 = _Named  # type: ignore[attr-defined,assignment]


def connection(session: ServerSession) -> Connection:
    """The per-client connection behind `session` (see the module docstring)."""
    return session._connection
