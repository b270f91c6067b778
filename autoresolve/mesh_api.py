"""The mesh as the supervisor sees it: its public HTTP API only (docs/supervisor-protocol.md of the
Go project), so any compatible mesh works. Accepts both list shapes: the Go project's bare JSON
array and `{"approvals": [...]}`."""

from __future__ import annotations

from typing import Any, Literal

import httpx

PROBE_ID = "supervisor-token-check"  # never a real approval id (those are hex)
Resolution = Literal["resolved", "already", "gone"]


class MeshUnavailable(Exception):
    """Cannot reach the mesh, or it answers 5xx: retry later."""


class ToolCallFailed(Exception):
    """A tool call of the supervisor's own was refused (policy) or failed (tool error)."""


class OperatorTokenProblem(Exception):
    """The mesh refused to let us resolve (403): no operator token, or the wrong one."""


class MeshApi:
    def __init__(
        self,
        url: str,
        *,
        operator_token: str | None = None,
        agent: str = "supervisor",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.has_token = operator_token is not None
        headers = {"Authorization": f"Bearer agent:{agent}"}
        if operator_token:
            headers["X-Operator-Token"] = operator_token
        self.http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise MeshUnavailable(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from None
        if response.status_code >= 500:
            raise MeshUnavailable(
                f"HTTP {response.status_code} on {method} {path}: {_error(response)}"
            )
        return response

    async def pending(self, tool: str | None = None) -> list[dict[str, Any]]:
        params = {"status": "pending"} | ({"tool": tool} if tool else {})
        response = await self._request("GET", "/approvals", params=params)
        if response.status_code != 200:
            raise MeshUnavailable(
                f"GET /approvals: HTTP {response.status_code}: {_error(response)}"
            )
        body = _json(response)
        items = (
            body
            if isinstance(body, list)
            else body.get("approvals")
            if isinstance(body, dict)
            else None
        )
        if not isinstance(items, list):
            raise MeshUnavailable(f"GET /approvals: not a list of approvals: {str(body)[:200]}")
        return [
            item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    async def detail(self, approval_id: str) -> dict[str, Any] | None:
        """The approval with its context (recent traces, grants); None if it is gone."""
        response = await self._request("GET", f"/approvals/{approval_id}")
        if response.status_code == 404:
            return None
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise MeshUnavailable(
                f"GET /approvals/{approval_id}: HTTP {response.status_code}: {_error(response)}"
            )
        return body

    async def resolve(
        self,
        approval_id: str,
        decision: Literal["approve", "deny"],
        *,
        resolved_by: str,
        reasoning: str,
        confidence: float,
    ) -> Resolution:
        response = await self._request(
            "POST",
            f"/approvals/{approval_id}/{decision}",
            json={"resolved_by": resolved_by, "reasoning": reasoning, "confidence": confidence},
        )
        if response.status_code in (401, 403):
            raise OperatorTokenProblem(self._token_message(response))
        if response.status_code == 404:
            return "gone"
        if response.status_code == 409:
            return "already"
        if response.status_code >= 400:
            raise MeshUnavailable(
                f"POST /approvals/{approval_id}/{decision}: HTTP {response.status_code}: "
                f"{_error(response)}"
            )
        return "resolved"

    async def check_token(self) -> str | None:
        """Whether resolving would be refused, without resolving anything: a problem, or None."""
        response = await self._request("POST", f"/approvals/{PROBE_ID}/approve", json={})
        return self._token_message(response) if response.status_code in (401, 403) else None

    def _token_message(self, response: httpx.Response) -> str:
        if self.has_token:
            return (
                f"the mesh at {self.url} refused our operator token ({_error(response)}): check "
                "MESH_OPERATOR_TOKEN / supervisor.operator_token against the mesh's "
                "auth.operator_token"
            )
        return (
            f"the mesh at {self.url} requires an operator token to resolve approvals "
            f"({_error(response)}): set MESH_OPERATOR_TOKEN or supervisor.operator_token"
        )

    async def health(self) -> dict[str, Any] | None:
        """The /health body when the mesh answers at all (degraded included); None if not."""
        try:
            response = await self.http.get("/health", timeout=3.0)
        except httpx.HTTPError:
            return None
        body = _json(response)
        return body if isinstance(body, dict) else {"status": f"HTTP {response.status_code}"}

    async def ready(self) -> bool:
        """Serving every role and upstream: `GET /ready` is 200 (Go shapes), or without that
        route, `GET /health` is 200 with status ok."""
        try:
            response = await self.http.get("/ready", timeout=3.0)
            if response.status_code == 404:
                response = await self.http.get("/health", timeout=3.0)
                body = _json(response)
                return (
                    response.status_code == 200
                    and isinstance(body, dict)
                    and body.get("status") == "ok"
                )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def call_tool(
        self, tool: str, params: dict[str, Any], timeout: float = 30.0
    ) -> dict[str, Any]:
        """A governed tool call as this supervisor's agent; the MCP result (content,
        structuredContent)."""
        response = await self._request(
            "POST", f"/tool/{tool}", json={"params": params}, timeout=timeout
        )
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise ToolCallFailed(
                f"POST /tool/{tool}: HTTP {response.status_code}: {_error(response)}"
            )
        result = body.get("result", body)
        if not isinstance(result, dict) or result.get("isError"):
            text = " ".join(
                c.get("text", "") for c in (result or {}).get("content", []) if isinstance(c, dict)
            )
            raise ToolCallFailed(f"{tool}: {text[:200] or 'tool error'}")
        return result


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:200] or response.reason_phrase
