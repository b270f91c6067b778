"""What a governed request asks of its upstream server once it is allowed, and how the answer is
read: a tool call (`ToolCall`: the answer is the CallToolResult) or another MCP request passed
through (`UpstreamRequest`: `{"result"}` or the upstream's own `{"error"}`), bus/messages.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus.errors import RPC_INTERNAL_ERROR, status_of_rpc_code
from bus.messages import ThenCall, ToolCall, UpstreamRequest
from gateway.catalog import ServerView
from gateway.outcome import Outcome


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    server: ServerView
    request: ToolCall | UpstreamRequest  # its `timeout` set: the server's

    @property
    def timeout(self) -> float:
        return self.request.timeout or 60.0

    def then(self) -> ThenCall:
        """The policy check's `then`: what the policy worker forwards if it allows the request."""
        if isinstance(self.request, ToolCall):
            return ThenCall(
                server=self.server.name,
                tool=self.request.tool,
                timeout=self.timeout,
                traceparent=self.request.traceparent,
            )
        return ThenCall(
            server=self.server.name, tool="", timeout=self.timeout, request=self.request
        )

    def read(self, outcome: Outcome, body: Any) -> None:
        """Put the upstream's answer on `outcome`: its result (200) or its own error."""
        if isinstance(self.request, ToolCall):
            outcome.source_result(self.server, body)
            outcome.status = 200
            return
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error["code"] if isinstance(error.get("code"), int) else RPC_INTERNAL_ERROR
            outcome.status, outcome.rpc_code = status_of_rpc_code(code), code
            outcome.error, outcome.rpc_data = str(error.get("message", "")), error.get("data")
        elif not isinstance(body, dict) or not isinstance(body.get("result"), dict):
            outcome.status, outcome.error = 502, f"upstream {self.server.name}: malformed reply"
        else:
            outcome.status, outcome.result = 200, body["result"]
