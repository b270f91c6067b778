"""The stdio connector hands the SDK a line it can answer for every request that has an id."""

from __future__ import annotations

import json

import pytest

from gateway.stdio_lines import REFUSED, screen

CALL = (
    '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", '
    '"params": {"name": "fs.read", "arguments": %s}}\n'
)


@pytest.mark.parametrize(
    "line",
    [
        CALL % '{"path": "/tmp"}',
        CALL % '{"n": 1180591620717411303424}',  # the SDK reads big integers: passed on
        "{not json\n",  # no id to answer: the SDK drops it, as before
        # a notification
        '{"jsonrpc": "2.0", "method": "notifications/x", "params": {"s": "\\ud800"}}\n',
    ],
)
def test_lines_the_sdk_takes_or_nobody_waits_on_pass_unchanged(line: str) -> None:
    assert screen(line) == line


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            '{"path": "\\ud800"}',
            "invalid params.arguments.path: string holds a lone surrogate \\ud800 at character 0",
        ),
        (
            '{"p": "ok", "q": ["\\udc00"]}',
            "invalid params.arguments.q[0]: string holds a lone surrogate \\udc00",
        ),
    ],
)
def test_a_request_the_sdk_would_drop_becomes_a_refusal_with_its_id(
    arguments: str, message: str
) -> None:
    replaced = json.loads(screen(CALL % arguments))
    assert replaced["id"] == 7 and replaced["method"] == REFUSED
    assert replaced["params"]["message"].startswith(message), replaced
