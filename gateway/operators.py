"""Who may change the mesh over HTTP: approve, deny, grant, revoke, reload (the operator routes).

With `auth.operator_token` the caller must send it (`X-Operator-Token`). Without one, any caller
may, but an agent that says who it is (its bearer) may not approve its own call nor grant itself
tools. A browser's request from another site is refused first: its `Origin` must be the mesh's
own address or in `allowed_origins` (DNS rebinding, a page elsewhere driving an operator's
browser through the console at /ui). A request without `Origin` is not a browser's cross-site
request (curl, the mesh CLI, agents' SDKs).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.http_edge import HttpError, IdentityError, claimed_agent
from mesh_config.model import Config

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def allowed_origins(config: Config) -> set[str]:
    return {f"http://{h}:{config.port}" for h in (*LOOPBACK, config.host)} | set(
        config.allowed_origins
    )


class Operators:
    def __init__(self, config: Config) -> None:
        self.origins = allowed_origins(config)
        self.token = config.auth.operator_token

    def check(self, request: Request) -> str | None:
        """None for an operator; else the agent the caller says it is (no operator token set).
        Raises HttpError (401, 403) for a caller who may not act here."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins:
            raise HttpError(
                403,
                f"Origin {origin!r} is not allowed to change anything here "
                "(add it to allowed_origins)",
            )
        if self.token is None:
            try:  # None: no identity claimed, a human at the mesh CLI, a script (Go's behaviour)
                return claimed_agent(request.headers.get("authorization"))
            except IdentityError as exc:
                raise HttpError(401, str(exc)) from None
        given = request.headers.get("x-operator-token")
        if not given:
            raise HttpError(
                403,
                "operator token required: send X-Operator-Token (this mesh has "
                "auth.operator_token; the mesh CLI sends $MESH_OPERATOR_TOKEN)",
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HttpError(
                403, "wrong operator token: X-Operator-Token does not match auth.operator_token"
            )
        return None
