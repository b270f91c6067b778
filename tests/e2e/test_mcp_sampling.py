"""Server-to-client requests: an upstream asking for sampling or elicitation during a call gets
its answer from the calling agent's MCP session (over the bus and back); a REST caller, which
cannot answer, makes it fail cleanly instead of hanging."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest

from tests.e2e.mesh import Mesh
from tests.support import text_of


@pytest.fixture(scope="module")
def mesh(everything_mesh: Mesh) -> Mesh:
    return everything_mesh


asked: list[Any] = []


async def sampling(
    context: Any, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    asked.append(params)
    return types.CreateMessageResult(
        role="assistant",
        model="agent-side-llm",
        stop_reason="endTurn",
        content=types.TextContent(type="text", text="sampled by the agent"),
    )


async def elicitation(context: Any, params: Any) -> types.ElicitResult:
    asked.append(params)
    return types.ElicitResult(action="accept", content={"color": "blue"})


async def test_sampling_request_is_answered_by_the_calling_agent(mesh: Mesh) -> None:
    asked.clear()
    async with mesh.mcp(
        "asked", sampling_callback=sampling, elicitation_callback=elicitation
    ) as client:
        result = await client.call_tool(
            "everything.trigger-sampling-request", {"prompt": "hello", "maxTokens": 20}
        )
    assert not result.is_error
    assert "sampled by the agent" in text_of(result) and "agent-side-llm" in text_of(result)
    (params,) = asked
    assert "hello" in params.messages[0].content.text and params.max_tokens == 20


async def test_elicitation_request_keeps_its_schema(mesh: Mesh) -> None:
    asked.clear()
    async with mesh.mcp(
        "asked", sampling_callback=sampling, elicitation_callback=elicitation
    ) as client:
        result = await client.call_tool("everything.trigger-elicitation-request", {})
    assert not result.is_error
    (params,) = asked
    assert params.requested_schema["type"] == "object" and params.requested_schema["properties"]


def test_rest_caller_cannot_answer_and_does_not_hang(mesh: Mesh) -> None:
    r = mesh.call(
        "everything.trigger-sampling-request", {"prompt": "x", "maxTokens": 5}, agent="rest"
    )
    assert r.status_code == 200, r.text  # the upstream answered: its tool failed, cleanly
    result = r.json()["result"]
    assert result["isError"] is True
    assert (
        "the caller cannot answer sampling/createMessage requests" in result["content"][0]["text"]
    )
