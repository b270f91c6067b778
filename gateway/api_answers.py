"""What the REST API's answers look like, for its OpenAPI document: the errors every route may
give (one `Answer` each, with an example), and every answer of a tool call (`POST /tool/...`).
The route table (gateway/api.py) names these."""

from __future__ import annotations

from typing import Any

from gateway import api_shapes as shapes
from gateway.api_route import Answer

DESCRIPTION = """Governance gateway between AI agents and MCP tools: every call is identified,
limited, decided by policy (allow, deny, human approval), forwarded to its upstream and traced.
Answers are the Go agent-mesh's shapes (lists are bare arrays, times RFC 3339, optional fields
absent); every answer, errors included, is JSON. A bad query parameter or body field is a 400
naming it. MCP clients use `/mcp` (Streamable HTTP), described by the MCP specification."""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ID = {
    "type": "string",
    "minLength": 4,
    "description": "The id, or a unique prefix of 4 or more characters.",
    "examples": ["1a2b3c4d"],
}
TIME = "2026-12-02T00:52:15.123456Z"


def link(operation_id: str, pointer: str) -> dict[str, dict[str, Any]]:
    """An OpenAPI link: the `id` of `operation_id` is this answer's value at `pointer`."""
    return {
        operation_id: {
            "operationId": operation_id,
            "parameters": {"id": f"$response.body#{pointer}"},
        }
    }


def error_answer(description: str, example: str) -> Answer:
    return Answer(shapes.Error, description, {"error": example})


BAD_QUERY = error_answer(
    "A query parameter is not what it should be (named).",
    "invalid query parameter limit='abc': expected a valid integer",
)
BAD_BODY = error_answer(
    "The body is not JSON, or a field is not what it should be (named).",
    "invalid body.duration: expected a valid string",
)
TOO_LARGE = error_answer(
    "The body is over 1 MiB.", "request body too large: limit is 1048576 bytes"
)
INTERNAL = Answer(
    shapes.InternalError,
    "A fault of the mesh, logged with this trace id.",
    {"error": "internal error", "trace_id": TRACE_ID},
)
TRACES_DOWN = error_answer(
    "The trace store did not answer.", "trace store unavailable: traces: deadline exceeded"
)
APPROVALS_DOWN = error_answer("The approval service did not answer.", "approval: deadline exceeded")
NOT_AN_AGENT = error_answer(
    "Authorization is not `Bearer agent:<id>`.",
    "Authorization header must be "
    "'Bearer agent:<id>' (id: 1-128 of letters, digits and . _ : @ / + -)",
)
NOT_AN_OPERATOR = error_answer(
    "Operator token missing or wrong, or an agent acting on its own behalf.",
    "operator token required: send X-Operator-Token",
)

CALL_EXAMPLE = {
    "trace_id": TRACE_ID,
    "policy": "allow",
    "latency_ms": 12,
    "result": {"content": [{"type": "text", "text": "[FILE] hello.txt"}]},
}


def _call(description: str, policy: str, error: str) -> Answer:
    return Answer(
        shapes.ToolCallResponse,
        description,
        {
            "trace_id": TRACE_ID,
            "policy": policy,
            "latency_ms": 0 if policy == "error" else 3,
            "error": error,
        },
    )


TOOL_CALL_ANSWERS = {
    200: Answer(
        shapes.ToolCallResponse,
        "Called: the upstream's result (an MCP CallToolResult; "
        "`isError` inside it is the tool's own failure).",
        CALL_EXAMPLE,
    ),
    400: _call(
        "Bad JSON, `params` not an object, or a value the upstream could not be given "
        "unchanged (named by its path).",
        "error",
        "invalid params.n: number out of range (no 64-bit float holds it; Infinity is not JSON)",
    ),
    401: _call(
        "Authorization is not `Bearer agent:<id>`.",
        "error",
        "Authorization header must be 'Bearer agent:<id>'",
    ),
    403: _call(
        "Denied by policy, or by a human.",
        "deny",
        "denied by policy claude: rule 2 (filesystem.*: deny)",
    ),
    404: _call(
        "No such tool (not traced).", "error", "unknown tool fs.nope: fs has no tool 'nope'"
    ),
    408: _call("Nobody approved in time.", "human_approval", "approval 1a2b3c4d timed out"),
    413: _call(
        "The body is over 1 MiB.", "error", "request body too large: limit is 1048576 bytes"
    ),
    429: _call("Rate limit or loop detection.", "rate_limited", "rate limit: 60 calls per minute"),
    500: _call(
        'A fault of the mesh (`error` is "internal error"; logged with the trace id).',
        "error",
        "internal error",
    ),
    502: _call(
        "The upstream failed: its error, exit, or its worker died.",
        "allow",
        "upstream error from fs.read_file: [-32603] ENOENT",
    ),
    503: _call(
        "A service or the upstream is unavailable.", "error", "upstream unavailable: fs (no worker)"
    ),
    504: _call(
        "The upstream gave no answer in time.",
        "allow",
        "upstream timeout: fs.read_file gave no answer in 60s",
    ),
}
