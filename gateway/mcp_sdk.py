"""What the mesh needs of the `mcp` SDK (2.x) that the SDK keeps private, reached here only, so
an SDK upgrade that moves it breaks in this one module, under a name that says what it is.

- A session's connection: lowlevel handlers get a `ServerRequestContext`, whose `session` (a
  per-request `ServerSession`) holds the per-client `Connection` as `session._connection`: its
  `state` (per-connection scratch: the log level a client set), its `exit_stack` (run when the
  client goes: forget its subscriptions) and its transport `session_id`. The SDK's public
  `Context.connection` is not what `ServerRunner` hands lowlevel handlers (mcp/server/context.py).
- `create_mcp_http_client` (`mcp.shared._httpx_utils`): the HTTP client with the MCP transports'
  own timeouts (30 s; reads 300 s, for long-lived SSE streams), for `streamable_http_client`.
"""

from __future__ import annotations

from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.shared._httpx_utils import create_mcp_http_client

__all__ = ["Connection", "connection", "create_mcp_http_client"]


def connection(session: ServerSession) -> Connection:
    """The per-client connection behind `session` (see the module docstring)."""
    return session._connection
