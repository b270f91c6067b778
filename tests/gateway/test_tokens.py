"""Token counts as the Go project's trace/tokens.go makes them (gateway/tokens.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.tokens import estimate_tokens, llm_tokens, token_fields


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (None, 0),
        ("", 0),
        ("abc", 1),  # anything non-empty is at least 1
        ("abcdefgh", 2),
        ("é" * 4, 2),  # bytes, not characters: 8 bytes
        ({}, 1),  # "{}" is 2 bytes
        (
            {"path": "/tmp/demo-enterprise/src/main.py"},
            10,
        ),  # {"path":"/tmp/demo-enterprise/src/main.py"} = 41
        ({"a": "<&>"}, 6),  # Go escapes each of <&> as \u00XX: {"a":"\u003c\u0026\u003e"} = 26
        ([1, 2, 3], 1),
    ],
)
def test_estimate_is_chars_over_4_of_gos_json(value: Any, tokens: int) -> None:
    assert estimate_tokens(value) == tokens


@pytest.mark.parametrize(
    ("tool", "result", "counts"),
    [
        ("ollama.generate", {"prompt_eval_count": 12, "eval_count": 30}, (12, 30)),
        ("anthropic.messages", {"usage": {"input_tokens": 5, "output_tokens": 7}}, (5, 7)),
        ("openai.chat", {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, (3, 4)),
        ("openai.chat", {"usage": "n/a"}, None),
        ("ollama.generate", {"eval_count": 0}, None),  # no counts: estimate instead
        ("fs.read", {"usage": {"input_tokens": 5}}, None),  # not an LLM tool
        ("ollama.generate", "text", None),
    ],
)
def test_real_counts_from_llm_providers(
    tool: str, result: Any, counts: tuple[int, int] | None
) -> None:
    assert llm_tokens(tool, result) == counts


def test_token_fields_of_a_forwarded_call() -> None:
    result = {"content": [{"type": "text", "text": "x" * 400}]}
    fields = token_fields("fs.read", {"path": "/a"}, result)
    assert fields["tokens_source"] == "estimate"
    assert fields["estimated_input_tokens"] == 3 and fields["estimated_output_tokens"] > 100
    failed = token_fields("fs.read", {"path": "/a"}, None)  # upstream failed: no output, left out
    assert "estimated_output_tokens" not in failed and failed["estimated_input_tokens"] == 3
    real = token_fields("ollama.generate", {}, {"prompt_eval_count": 2, "eval_count": 9})
    assert real == {
        "tokens_source": "real",
        "estimated_input_tokens": 2,
        "estimated_output_tokens": 9,
    }
