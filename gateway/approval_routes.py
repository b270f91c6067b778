"""The REST routes of approvals and grants (the supervisor protocol, compat.md §3 and §7), on
the approval service (`approval` on the bus). Each request is built as the service's typed
message (a field of the wrong type is the caller's 400); the service's error becomes the HTTP
status the error map names (bus/errors.py). Answers are Go's shapes (policy/approval_view.py,
gateway/api_views.py)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.approval_messages import (
    ApprovalGet,
    ApprovalList,
    ApprovalResolve,
    GrantCreate,
    GrantList,
    GrantRevoke,
)
from bus.client import BusClient
from bus.messages import TraceQuery
from gateway import api_shapes as shapes
from gateway.api_answers import (
    APPROVALS_DOWN,
    BAD_QUERY,
    ID,
    error_answer,
    link,
)
from gateway.api_requests import ApprovalsQuery, GrantBody, GrantsQuery, ResolveBody
from gateway.api_route import Answer, ApiRoute
from gateway.api_views import grant_globs, grant_view
from gateway.approval_ask import ask_approval, caller
from gateway.http_edge import HttpError, error
from gateway.operators import Operators
from gateway.trace_routes import TraceRoutes
from policy.approval_view import approval_view
from policy.globs import glob_matches


class ApprovalRoutes:
    def __init__(self, client: BusClient, operators: Operators, traces: TraceRoutes) -> None:
        self.client = client
        self.operators = operators
        self.traces = traces  # an approval's detail shows the agent's recent calls

    async def approvals(self, request: Request, query: ApprovalsQuery) -> Response:
        reply = await ask_approval(
            self.client,
            ApprovalList,
            status=query.status or None,
            tool=query.tool or None,
            agent=query.agent or None,
            limit=query.limit_or(500),
        )
        now = time.time()
        return JSONResponse([approval_view(a, now) for a in reply["approvals"]])

    async def approval(self, request: Request) -> Response:
        reply = await ask_approval(self.client, ApprovalGet, id=request.path_params["id"])
        approval = reply["approval"]
        try:
            recent = (
                await self.traces.read(TraceQuery(agent=approval["agent_id"], limit=10).dump())
            )["traces"]
        except HttpError:
            recent = []
        now = time.time()
        return JSONResponse(
            {
                **approval_view(approval, now),
                "recent_traces": recent,
                "active_grants": [grant_view(g, now) for g in reply["active_grants"]],
            }
        )

    async def resolve(self, request: Request, body: ResolveBody) -> Response:
        """`resolved_by` defaults to the caller's address, as in Go."""
        agent = self.operators.check(request)
        decision = request.path_params["decision"]
        if decision not in ("approve", "deny"):
            return error(404, f"no route {request.url.path} (approve or deny)")
        reply = await ask_approval(
            self.client,
            ApprovalResolve,
            id=request.path_params["id"],
            decision=decision,
            resolved_by=body.resolved_by or caller(request),
            reasoning=body.reasoning,
            confidence=body.confidence,
            agent=agent,
        )
        # Go: {"status", "id"}; the whole approval beside them.
        return JSONResponse(
            {
                "status": reply["status"],
                "id": reply["id"],
                "approval": approval_view(reply, time.time()),
            }
        )

    async def grants(self, request: Request, query: GrantsQuery) -> Response:
        reply = await ask_approval(self.client, GrantList, agent=query.agent or None)
        now = time.time()
        return JSONResponse([grant_view(g, now) for g in reply["grants"]])

    async def create_grant(self, request: Request, body: GrantBody) -> Response:
        """`tools`: a glob, globs joined by ",", or a list; `duration` a Go duration (30m, 2h)."""
        agent = self.operators.check(request)
        if agent is not None and glob_matches(body.agent, agent):
            return error(
                403,
                f"agent {agent} cannot grant itself tools (grant for {body.agent!r}); "
                "an operator creates grants without the agent's bearer",
            )
        globs = grant_globs(body.tools)
        if globs is None:
            return error(
                400,
                'invalid body.tools: a tool glob ("filesystem.*"), globs joined by ",", '
                "or a list of globs",
            )
        grant = await ask_approval(
            self.client,
            GrantCreate,
            agent=body.agent,
            tools=globs,
            duration=body.duration,
            created_by=body.created_by or caller(request),
        )
        return JSONResponse(grant_view(grant, time.time()), status_code=201)

    async def revoke_grant(self, request: Request) -> Response:
        self.operators.check(request)
        grant = await ask_approval(
            self.client, GrantRevoke, id=request.path_params["id"], revoked_by=caller(request)
        )
        return JSONResponse(
            {"status": "revoked", "id": grant["id"], "grant": grant_view(grant, time.time())}
        )

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "GET",
                "/approvals",
                self.approvals,
                "Approvals, newest first",
                {
                    200: Answer(
                        list[shapes.ApprovalView],
                        "Approvals (default 500).",
                        links=link("get_approvals_id", "/0/id")
                        | link("post_approvals_id_decision", "/0/id"),
                    ),
                    400: BAD_QUERY,
                    503: APPROVALS_DOWN,
                },
                query=ApprovalsQuery,
                tags=["approvals"],
            ),
            ApiRoute(
                "GET",
                "/approvals/{id}",
                self.approval,
                "One approval, with the agent's recent calls",
                {
                    200: Answer(
                        shapes.ApprovalDetail,
                        "The approval (by id or a unique prefix of 4 or more).",
                    ),
                    400: error_answer(
                        "The id is too short, or a prefix of several.",
                        "approval id 'ab' is too short (at least 4)",
                    ),
                    404: error_answer("No such approval.", "no approval 1a2b3c4d"),
                    503: APPROVALS_DOWN,
                },
                path_params={"id": ID},
                tags=["approvals"],
            ),
            ApiRoute(
                "POST",
                "/approvals/{id}/{decision:str}",
                self.resolve,
                "Approve or deny a waiting call",
                {
                    200: Answer(
                        shapes.Resolved, "Resolved: the waiting call goes on (or is refused)."
                    ),
                    404: error_answer(
                        "No such approval, or a decision other than approve / deny.",
                        "no approval 1a2b3c4d",
                    ),
                    409: error_answer("Already resolved.", "approval 1a2b3c4d is already approved"),
                    503: APPROVALS_DOWN,
                },
                body=ResolveBody,
                body_example={"resolved_by": "alice", "reasoning": "looks fine"},
                operator=True,
                path_params={"id": ID, "decision": {"type": "string", "enum": ["approve", "deny"]}},
                tags=["approvals"],
            ),
            ApiRoute(
                "GET",
                "/grants",
                self.grants,
                "Active grants",
                {
                    200: Answer(
                        list[shapes.GrantView],
                        "Grants in force.",
                        links=link("delete_grants_id", "/0/id"),
                    ),
                    503: APPROVALS_DOWN,
                },
                query=GrantsQuery,
                tags=["approvals"],
            ),
            ApiRoute(
                "POST",
                "/grants",
                self.create_grant,
                "Grant an agent tools for a while",
                {
                    201: Answer(
                        shapes.GrantView,
                        "The grant: those calls are allowed until it expires.",
                        links=link("delete_grants_id", "/id"),
                    ),
                    503: APPROVALS_DOWN,
                },
                body=GrantBody,
                body_example={"agent": "claude", "tools": "filesystem.*", "duration": "30m"},
                operator=True,
                tags=["approvals"],
            ),
            ApiRoute(
                "DELETE",
                "/grants/{id}",
                self.revoke_grant,
                "Revoke a grant",
                {
                    200: Answer(shapes.Revoked, "Revoked."),
                    400: error_answer(
                        "The prefix names several grants.", "grant id prefix '1a2b' is ambiguous"
                    ),
                    404: error_answer("No such grant (or already revoked).", "no grant 1a2b3c4d"),
                    503: APPROVALS_DOWN,
                },
                operator=True,
                path_params={"id": ID},
                tags=["approvals"],
            ),
        ]
