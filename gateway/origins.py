"""Which browser origins may make state-changing requests to the gateway (`/mcp`, the operator
routes the console uses): the mesh's own address and `allowed_origins`. A request without an
`Origin` header is not a browser's cross-site request (curl, the mesh CLI, agents' SDKs)."""

from __future__ import annotations

from mesh_config.model import Config

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def allowed_origins(config: Config) -> set[str]:
    return {f"http://{h}:{config.port}" for h in (*LOOPBACK, config.host)} | set(
        config.allowed_origins
    )
