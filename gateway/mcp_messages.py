"""What `/mcp` takes as one JSON-RPC 2.0 message: an object as the SDK's models read it. A body
that parses but is not one (a batch `[]`, a number, `"jsonrpc": "1.0"`) is refused with one line
saying why, as a -32600 (gateway/mcp_http.py), where the SDK would answer its pydantic union's
validation errors, several per message type."""

from __future__ import annotations

from typing import Any

import pydantic
from mcp_types.jsonrpc import jsonrpc_message_adapter


class NotOneMessage(Exception):
    """A body that parses but is not one JSON-RPC 2.0 message: what is wrong, in one line."""


def message_problem(message: Any) -> str | None:
    """Why `message` (parsed JSON) is not one message the SDK takes; None when it is."""
    if isinstance(message, list):  # JSON-RPC batching left MCP in 2025-06-18; the SDK has none
        return "batch requests are not supported: send one JSON-RPC message per POST"
    if not isinstance(message, dict):
        return f"the body must be one JSON-RPC 2.0 message (an object), not {_json_type(message)}"
    if message.get("jsonrpc") != "2.0":
        return 'not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"'
    if "method" in message:  # a request or notification, as the SDK's models take it
        if not isinstance(message["method"], str):
            return '"method" must be a string'
        if message.get("params") is not None and not isinstance(message["params"], dict):
            return '"params" must be an object'
        return None
    if "result" not in message and "error" not in message:
        return 'no "method" (a request or notification) nor "result" or "error" (a response)'
    try:
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except pydantic.ValidationError:
        return (
            'an invalid response: "id" must be a string or an integer, "result" an object, '
            '"error" an object with an integer "code" and a string "message"'
        )
    return None


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
