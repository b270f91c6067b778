"""What /mcp takes as one JSON-RPC message (gateway/mcp_messages.py): a body that is not one is
named in one line, and the line is said exactly when the SDK's own models refuse the message."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from mcp_types.jsonrpc import jsonrpc_message_adapter

from gateway.mcp_messages import message_problem

REFUSED: list[tuple[Any, str]] = [
    ([], "batch requests are not supported: send one JSON-RPC message per POST"),
    (
        [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
        "batch requests are not supported: send one JSON-RPC message per POST",
    ),
    (42, "the body must be one JSON-RPC 2.0 message (an object), not a number"),
    ("ping", "the body must be one JSON-RPC 2.0 message (an object), not a string"),
    (None, "the body must be one JSON-RPC 2.0 message (an object), not null"),
    (True, "the body must be one JSON-RPC 2.0 message (an object), not a boolean"),
    ({}, 'not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"'),
    ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 'not a JSON-RPC 2.0 message: "jsonrpc"'),
    ({"jsonrpc": 2.0, "id": 1, "method": "ping"}, 'not a JSON-RPC 2.0 message: "jsonrpc"'),
    ({"jsonrpc": "2.0", "id": 1, "method": 7}, '"method" must be a string'),
    ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, '"params" must be an object'),
    ({"jsonrpc": "2.0", "method": "x", "params": "a"}, '"params" must be an object'),
    ({"jsonrpc": "2.0", "id": 1}, 'no "method" (a request or notification) nor "result"'),
    ({"jsonrpc": "2.0", "id": 1, "result": []}, "an invalid response: "),
    ({"jsonrpc": "2.0", "id": [1], "result": {}}, "an invalid response: "),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}}, "an invalid response: "),
]

TAKEN: list[Any] = [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "t"}},
    {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": None},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 1, "result": {}},
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "m"}},
]


def sdk_takes(message: Any) -> bool:
    try:
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except pydantic.ValidationError:
        return False
    return True


@pytest.mark.parametrize(("message", "problem"), REFUSED)
def test_what_is_not_one_message_is_named_in_one_line(message: Any, problem: str) -> None:
    said = message_problem(message)
    assert said is not None and said.startswith(problem) and "\n" not in said
    assert not sdk_takes(message)  # the SDK refuses it too: nothing it would serve is refused


@pytest.mark.parametrize("message", TAKEN)
def test_what_the_sdk_takes_passes(message: Any) -> None:
    assert sdk_takes(message)
    assert message_problem(message) is None
