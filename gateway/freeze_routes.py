"""The REST routes of the kill switch: `POST /freezes`, `GET /freezes`, `DELETE /freezes/{id}`
(operator routes, gateway/operators.py), on the approval service that stores and announces
freezes (workers/freeze_service.py). Anyone who may act here may pull the switch; an agent that
says who it is (its bearer, no operator token set) may not lift one: a human thaws."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.approval_messages import FreezeCreate, FreezeList, FreezeThaw
from bus.client import BusClient
from gateway import api_shapes as shapes
from gateway.api_answers import (
    APPROVALS_DOWN,
    ID,
    error_answer,
    link,
)
from gateway.api_requests import FreezeBody
from gateway.api_route import Answer, ApiRoute
from gateway.approval_ask import ask_approval, caller
from gateway.http_edge import error
from gateway.operators import Operators
from policy.approval_view import rfc3339


def freeze_view(freeze: dict[str, Any]) -> dict[str, Any]:
    """A freeze as the REST API shows it (api_shapes.FreezeView): times in RFC 3339."""
    out = {k: freeze[k] for k in ("id", "kind", "target", "reason", "created_by")}
    out["created_at"] = rfc3339(freeze["created_at"])
    if freeze.get("thawed_at") is not None:
        out["thawed_at"] = rfc3339(freeze["thawed_at"])
        out["thawed_by"] = freeze.get("thawed_by") or ""
    if "denied_approvals" in freeze:
        out["denied_approvals"] = freeze["denied_approvals"]
    return out


class FreezeRoutes:
    def __init__(self, client: BusClient, operators: Operators) -> None:
        self.client = client
        self.operators = operators

    async def freezes(self, request: Request) -> Response:
        reply = await ask_approval(self.client, FreezeList)
        return JSONResponse([freeze_view(f) for f in reply["freezes"]])

    async def freeze(self, request: Request, body: FreezeBody) -> Response:
        """Exactly one of `agent`, `tool`, `all`. New calls it stops are refused on every
        policy worker at once; its pending approvals are denied with `reason`."""
        agent = self.operators.check(request)
        freeze = await ask_approval(
            self.client,
            FreezeCreate,
            agent=body.agent,
            tool=body.tool,
            all=body.all,
            reason=body.reason,
            created_by=body.created_by or (f"agent:{agent}" if agent else caller(request)),
        )
        return JSONResponse(freeze_view(freeze), status_code=201)

    async def thaw(self, request: Request) -> Response:
        if (agent := self.operators.check(request)) is not None:
            return error(
                403, f"agent {agent} cannot thaw a freeze; an operator does (without a bearer)"
            )
        freeze = await ask_approval(
            self.client, FreezeThaw, id=request.path_params["id"], thawed_by=caller(request)
        )
        return JSONResponse({"status": "thawed", "id": freeze["id"], "freeze": freeze_view(freeze)})

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "GET",
                "/freezes",
                self.freezes,
                "Freezes in force (the kill switch)",
                {
                    200: Answer(
                        list[shapes.FreezeView],
                        "Oldest first: the first that stops a call names it.",
                        links=link("delete_freezes_id", "/0/id"),
                    ),
                    503: APPROVALS_DOWN,
                },
                tags=["kill switch"],
            ),
            ApiRoute(
                "POST",
                "/freezes",
                self.freeze,
                "Freeze an agent, tools, or everything",
                {
                    201: Answer(
                        shapes.FreezeView,
                        "The freeze: in force on every policy worker within 100 ms.",
                        links=link("delete_freezes_id", "/id"),
                    ),
                    503: APPROVALS_DOWN,
                },
                body=FreezeBody,
                body_example={"agent": "claude", "reason": "leaking secrets"},
                operator=True,
                tags=["kill switch"],
            ),
            ApiRoute(
                "DELETE",
                "/freezes/{id}",
                self.thaw,
                "Thaw: lift a freeze",
                {
                    200: Answer(shapes.Thawed, "Thawed: its calls are served again."),
                    400: error_answer(
                        "The prefix names several freezes.",
                        "freeze id prefix '1a2b' is ambiguous",
                    ),
                    404: error_answer("No such freeze (or already thawed).", "no freeze 1a2b3c4d"),
                    503: APPROVALS_DOWN,
                },
                operator=True,
                path_params={"id": ID},
                tags=["kill switch"],
            ),
        ]
